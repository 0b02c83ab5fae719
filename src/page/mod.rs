//! The status page: one HTML document, its script and its style sheet, embedded in the binary
//! (`include_str!`, no build step, nothing fetched from elsewhere) and served on the TCP
//! listener at `GET /`, `GET /ui/app.js`, `GET /ui/app.css` and `GET /ui/icon.svg` without a
//! token.
//!
//! Invariants:
//! - The three files hold no secret and no data: everything the page shows comes over the
//!   WebSocket (`/ws/monitor?token=...`), which needs the token like every other route. The
//!   page asks for the token (or takes it from a `#token=` fragment) and keeps it in the
//!   browser's `sessionStorage`.
//! - Every answer carries a strict Content-Security-Policy: no inline script or style, nothing
//!   from another origin, no framing. The HTML therefore has no `<script>` body, no `style`
//!   attribute and no `on...` handler (tested below), and the script never writes HTML.
//! - Together the files stay under [`MAX_PAGE_BYTES`] (tested below).

/// The page, its script and its style sheet together stay under this size.
pub const MAX_PAGE_BYTES: usize = 60 * 1024;

const HTML: &str = include_str!("index.html");
const JS: &str = include_str!("app.js");
const CSS: &str = include_str!("app.css");
const ICON: &str = include_str!("icon.svg");

/// The Content-Security-Policy of every page answer: scripts, styles and images from this
/// origin only, network access (the WebSocket) to this origin only, no framing, no forms, no
/// `<base>`. `'self'` covers `ws://` to the same host and port in CSP level 3 browsers.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// One embedded file of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// `GET /`: the document.
    Html,
    /// `GET /ui/app.js`: the script that drives it.
    Js,
    /// `GET /ui/app.css`: its style sheet.
    Css,
    /// `GET /ui/icon.svg`: its icon (so the browser's favicon request is not a 401).
    Icon,
}

impl Asset {
    /// The file's bytes.
    pub fn body(self) -> &'static str {
        match self {
            Asset::Html => HTML,
            Asset::Js => JS,
            Asset::Css => CSS,
            Asset::Icon => ICON,
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Asset::Html => "text/html; charset=utf-8",
            Asset::Js => "text/javascript; charset=utf-8",
            Asset::Css => "text/css; charset=utf-8",
            Asset::Icon => "image/svg+xml",
        }
    }

    /// The security headers every page answer carries (the content type aside).
    pub fn headers() -> Vec<(&'static str, String)> {
        vec![
            ("Content-Security-Policy", CSP.to_string()),
            ("X-Content-Type-Options", "nosniff".to_string()),
            ("Referrer-Policy", "no-referrer".to_string()),
            ("X-Frame-Options", "DENY".to_string()),
            // The files change only with the binary; revalidating costs one request.
            ("Cache-Control", "no-cache".to_string()),
        ]
    }
}

/// The link `vsm-daemon token` prints: the page on the bound address, with the token in the
/// fragment (which browsers never send to a server; the page removes it from the address bar).
/// An unspecified bind address (`0.0.0.0`, `::`) is shown as loopback.
pub fn link(addr: std::net::SocketAddr, token: &str) -> String {
    let host = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    format!("http://{host}:{}/#token={token}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_small() {
        let total = HTML.len() + JS.len() + CSS.len() + ICON.len();
        assert!(total < MAX_PAGE_BYTES, "{total} bytes");
    }

    #[test]
    fn the_html_needs_nothing_the_policy_forbids() {
        let lower = HTML.to_ascii_lowercase();
        // Scripts only by src from this origin; no inline handlers or styles.
        for script in lower.split("<script").skip(1) {
            let (tag, rest) = script.split_once('>').expect("closed tag");
            assert!(
                tag.contains("src=\"/ui/"),
                "inline or foreign script: {tag}"
            );
            assert!(rest.trim_start().starts_with("</script>"), "script body");
        }
        assert!(!lower.contains("<style"), "inline style element");
        assert!(!lower.contains(" style="), "style attribute");
        // No `on...=` attribute (an inline handler).
        for (i, _) in lower.match_indices(" on") {
            let name: String = lower[i + 3..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            let after = lower[i + 3 + name.len()..].trim_start();
            assert!(!after.starts_with('='), "inline handler on{name}");
        }
        for file in [HTML, JS, CSS, ICON] {
            // The SVG namespace is a name, not something fetched.
            let file = file.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !file.contains("http://") && !file.contains("https://"),
                "external URL"
            );
        }
        // The script builds nodes; it never parses HTML from strings.
        assert!(!JS.contains("innerHTML") && !JS.contains("outerHTML"));
        assert!(!JS.contains("eval(") && !JS.contains("new Function"));
    }

    #[test]
    fn links_point_at_a_reachable_address() {
        let t = "abc";
        assert_eq!(
            link("0.0.0.0:4000".parse().unwrap(), t),
            "http://127.0.0.1:4000/#token=abc"
        );
        assert_eq!(
            link("[::]:4000".parse().unwrap(), t),
            "http://[::1]:4000/#token=abc"
        );
        assert_eq!(
            link("192.0.2.7:80".parse().unwrap(), t),
            "http://192.0.2.7:80/#token=abc"
        );
    }
}
