//! A small XML writer: enough for libvirt domain documents, with escaping and two-space
//! indentation, so the output is stable for golden files.

pub struct Xml {
    out: String,
    depth: usize,
    stack: Vec<&'static str>,
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

impl Xml {
    pub fn new() -> Self {
        Xml {
            out: String::new(),
            depth: 0,
            stack: Vec::new(),
        }
    }

    fn start(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            self.out.push_str(&format!(" {k}='{}'", escape(v)));
        }
    }

    /// `<tag a='b'>` and everything up to the matching [`Xml::close`] nested in it.
    pub fn open(&mut self, tag: &'static str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(tag, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
        self.stack.push(tag);
        self
    }

    pub fn close(&mut self) -> &mut Self {
        let tag = self.stack.pop().expect("close without open");
        self.depth -= 1;
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str(&format!("</{tag}>\n"));
        self
    }

    /// `<tag a='b'/>`
    pub fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(tag, attrs);
        self.out.push_str("/>\n");
        self
    }

    /// `<tag a='b'>text</tag>`
    pub fn text(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.start(tag, attrs);
        self.out.push_str(&format!(">{}</{tag}>\n", escape(text)));
        self
    }

    pub fn finish(self) -> String {
        assert!(self.stack.is_empty(), "unclosed elements: {:?}", self.stack);
        self.out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_and_indents() {
        let mut x = super::Xml::new();
        x.open("a", &[("k", "it's <b>")])
            .text("c", &[], "x & y")
            .empty("d", &[])
            .close();
        assert_eq!(
            x.finish(),
            "<a k='it&apos;s &lt;b&gt;'>\n  <c>x &amp; y</c>\n  <d/>\n</a>\n"
        );
    }
}
