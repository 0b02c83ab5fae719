//! Outbound TLS through the real binary: an `https://` check and an `https://` webhook against
//! a real TLS server on loopback (Python's `ssl`), whose certificate is signed by a CA the
//! test makes with `openssl`. With `security.ca_file` naming that CA both work; without it the
//! check is down and the delivery fails, each saying it was TLS and why; a CA file that holds
//! a private key is refused with that reason. Changing the key applies to the next run.

use crate::util::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command};

/// Runs openssl in `dir`, failing the test with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (.ci/run installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

/// A CA (`ca.pem`, `ca.key`) and a server certificate it signed for 127.0.0.1 (`server.pem`,
/// `server.key`), all in `dir`.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=vsm-daemon test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .expect("extensions file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

struct HttpsFixture(Child, u16);

impl HttpsFixture {
    fn start(dir: &Path) -> HttpsFixture {
        let port_file = dir.join("https-port");
        let child = Command::new("python3")
            .arg(format!(
                "{}/tests/fixtures/https_fixture.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(dir.join("server.pem"))
            .arg(dir.join("server.key"))
            .arg(&port_file)
            .arg(dir.join("posted.txt"))
            .spawn()
            .expect("python3 runs the HTTPS fixture");
        let port = wait_until(
            "the HTTPS fixture's port",
            || std::fs::read_to_string(&port_file).ok(),
            Option::is_some,
            |_| "no port file".into(),
        )
        .and_then(|p| p.trim().parse().ok())
        .expect("a port");
        HttpsFixture(child, port)
    }
}

impl Drop for HttpsFixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn actions(d: &Daemon) -> Value {
    let (status, body) = d.http("GET", "/api/v1/checks", None);
    assert_eq!(status, 200, "{body}");
    body["data"]["actions"].clone()
}

#[test]
fn https_checks_and_webhooks_trust_the_configured_ca_and_say_why_otherwise() {
    let dir = TempDir::new("tls");
    make_certificates(dir.path());
    let server = HttpsFixture::start(dir.path());
    let ca = dir.path().join("ca.pem");
    let config = format!(
        "[security]\nca_file = \"{}\"\n\n\
         [[checks]]\nname = \"secure\"\nkind = \"http\"\n\
         target = \"https://127.0.0.1:{port}/health\"\nexpect_body = \"tls ok\"\n\
         every_ms = 3600000\ntimeout_ms = 5000\n\n\
         [actions.hook]\nkind = \"webhook\"\nurl = \"https://127.0.0.1:{port}/alert\"\n\
         timeout_ms = 5000\n",
        ca.display(),
        port = server.1
    );
    let posted = dir.path().join("posted.txt");
    let key = dir.path().join("server.key");
    let d = Daemon::start_in(
        dir,
        Setup {
            config: Some(config),
            ..Setup::default()
        },
    )
    .expect("a daemon with https:// targets starts");

    // Trusted through the CA file: the check is up and the webhook is delivered.
    let (code, up) = d.cli_json(&["checks", "run", "secure"]);
    assert_eq!((code, up["status"].as_str()), (0, Some("up")), "{up}");
    assert_eq!(up["value"].as_f64(), Some(200.0), "{up}");
    let (status, body) = d.http("POST", "/api/v1/actions/hook/test", None);
    assert_eq!(status, 200, "{body}");
    wait_until(
        "the https webhook delivered",
        || actions(&d),
        |a| a["delivered"] == 1,
        |a| format!("{a}\n{}", d.stderr()),
    );
    let got = std::fs::read_to_string(&posted).expect("the server recorded the POST");
    let json: Value = serde_json::from_str(got.trim()).expect("a JSON body");
    assert_eq!(json["alert"]["rule"], "action_test", "{got}");

    // Without the CA file only the built-in roots are trusted: TLS fails, and says so.
    let (code, out) = d.cli_json(&["config", "set", "security.ca_file", ""]);
    assert_eq!(code, 0, "{out}");
    let (code, down) = d.cli_json(&["checks", "run", "secure"]);
    assert_eq!((code, down["status"].as_str()), (1, Some("down")), "{down}");
    let message = down["message"].as_str().unwrap_or("");
    assert!(
        message.contains("TLS: the server's certificate is not trusted")
            && message.contains("security.ca_file"),
        "{down}"
    );
    let (status, body) = d.http("POST", "/api/v1/actions/hook/test", None);
    assert_eq!(status, 200, "{body}");
    wait_until(
        "the https webhook's first attempt to fail on TLS",
        || d.stderr(),
        |log| log.contains("action webhook:hook attempt 1 failed") && log.contains("TLS: "),
        |log| log.clone(),
    );
    assert_eq!(actions(&d)["delivered"], 1);

    // A CA file that holds a private key is not used, and the check says why.
    let (code, out) = d.cli_json(&[
        "config",
        "set",
        "security.ca_file",
        &key.display().to_string(),
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, bad) = d.cli_json(&["checks", "run", "secure"]);
    assert_eq!(code, 1, "{bad}");
    assert!(
        bad["message"]
            .as_str()
            .unwrap_or("")
            .contains("private key"),
        "{bad}"
    );

    // And the CA file again: trusted again, no reload needed.
    let (code, out) = d.cli_json(&[
        "config",
        "set",
        "security.ca_file",
        &ca.display().to_string(),
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, up) = d.cli_json(&["checks", "run", "secure"]);
    assert_eq!((code, up["status"].as_str()), (0, Some("up")), "{up}");
}
