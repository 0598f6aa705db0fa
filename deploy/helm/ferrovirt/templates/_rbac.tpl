{{/*
deploy/rbac/rbac.yaml (files/rbac is a link to it) is the one source of KubeVirt's
user-facing roles and of virt-api's permissions; the harness and hack/local-up.sh apply the
same file. "ferrovirt.rbacDocs" returns its documents as a list (in a dict under "docs").
*/}}
{{- define "ferrovirt.rbacDocs" -}}
{{- $docs := list -}}
{{- range (.Files.Get "files/rbac/rbac.yaml" | splitList "\n---\n") -}}
{{- $doc := fromYaml . -}}
{{- if $doc.kind -}}
{{- $docs = append $docs $doc -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "docs" $docs) -}}
{{- end }}
