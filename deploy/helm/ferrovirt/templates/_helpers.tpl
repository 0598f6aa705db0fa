{{/* Labels every object of the chart carries. */}}
{{- define "ferrovirt.labels" -}}
app.kubernetes.io/name: ferrovirt
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* A component's image: ferrovirt.image (dict "root" $ "repository" .Values.x.repository) */}}
{{- define "ferrovirt.image" -}}
{{- $v := .root.Values.image -}}
{{- printf "%s/%s:%s" $v.registry .repository ($v.tag | default .root.Chart.AppVersion) -}}
{{- end }}

{{/* imagePullSecrets and pull policy of a container spec's pod. */}}
{{- define "ferrovirt.pullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
- name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ferrovirt.priorityClassName" -}}
{{- with .Values.priorityClass.name }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* The restricted pod security profile's container settings (virt-controller, virt-api). */}}
{{- define "ferrovirt.restrictedContainer" -}}
securityContext:
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* /healthz on the component's runtime endpoint (the metrics port) as both probes. */}}
{{- define "ferrovirt.probes" -}}
readinessProbe:
  httpGet: {path: /healthz, port: metrics}
  periodSeconds: 5
livenessProbe:
  httpGet: {path: /healthz, port: metrics}
  initialDelaySeconds: 15
  periodSeconds: 10
  failureThreshold: 6
{{- end }}
