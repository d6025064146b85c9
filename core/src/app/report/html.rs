//! The report as one HTML page: styles inline, images as `data:` URIs, no script.

use std::fmt::Write;

use super::{Report, Section};

/// Text for HTML content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648, with padding), for `data:` URIs.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}\
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}\
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:0}\
dl.facts dt{color:#666}dl.facts dd{margin:0}\
table{border-collapse:collapse;background:#fff}\
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f0f0f0}\
.charts,.gallery{display:flex;flex-wrap:wrap;gap:16px}\
figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px}\
figcaption{font-size:12px;color:#444;max-width:260px;overflow-wrap:anywhere}\
.note{color:#555}";

/// The page.
pub(super) fn render(report: &Report) -> String {
    let mut page = String::new();
    let title = escape(&report.title);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n<dl class=\"facts\">"
    );
    for (k, v) in &report.facts {
        let _ = write!(page, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
    }
    page.push_str("</dl>\n");
    for section in &report.sections {
        match section {
            Section::Table {
                title,
                header,
                rows,
            } => {
                let _ = write!(page, "<h2>{}</h2>\n<table><tr>", escape(title));
                for h in header {
                    let _ = write!(page, "<th>{}</th>", escape(h));
                }
                page.push_str("</tr>\n");
                for row in rows {
                    page.push_str("<tr>");
                    for cell in row {
                        let _ = write!(page, "<td>{}</td>", escape(cell));
                    }
                    page.push_str("</tr>\n");
                }
                page.push_str("</table>\n");
            }
            Section::Charts { title, charts } => {
                let _ = write!(page, "<h2>{}</h2>\n<div class=\"charts\">", escape(title));
                for (caption, svg) in charts {
                    // The SVG is ours (built by `charts`), so it goes in as markup.
                    let _ = write!(
                        page,
                        "<figure>{svg}<figcaption>{}</figcaption></figure>",
                        escape(caption)
                    );
                }
                page.push_str("</div>\n");
            }
            Section::Gallery { title, note, items } => {
                let _ = write!(
                    page,
                    "<h2>{}</h2>\n<p class=\"note\">{}</p>\n<div class=\"gallery\">",
                    escape(title),
                    escape(note)
                );
                for item in items {
                    let _ = write!(
                        page,
                        "<figure><img alt=\"{alt}\" width=\"{w}\" height=\"{h}\" \
                         src=\"data:image/png;base64,{data}\"><figcaption>{caption}</figcaption>\
                         </figure>",
                        alt = escape(&item.caption),
                        w = item.width,
                        h = item.height,
                        data = base64(&item.png),
                        caption = escape(&item.caption),
                    );
                }
                page.push_str("</div>\n");
            }
        }
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn text_is_escaped_everywhere() {
        let report = Report {
            title: "<script>x</script>".into(),
            facts: vec![("model".into(), "a&b \"c\"".into())],
            sections: vec![Section::Table {
                title: "t".into(),
                header: vec!["<h>".into()],
                rows: vec![vec!["</td><img src=x onerror=alert(1)>".into()]],
            }],
        };
        let page = report.to_html();
        assert!(!page.contains("<script>") && !page.contains("<img src=x"));
        assert!(page.contains("&lt;script&gt;") && page.contains("a&amp;b &quot;c&quot;"));
    }
}
