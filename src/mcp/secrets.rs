//! Environment values of registered servers live in a secrets file of their own
//! ([`SECRETS_FILE`], 0600 like every state file, in the 0700 state directory), never in
//! `servers.json`, which keeps each variable's name with the value [`MASK`]. Everything the
//! daemon shows (answers, CLI, events, logs) shows [`MASK`] too; only the spawned server gets
//! the value.
//!
//! Invariants: a value is never lost. A registration writes the secrets file (old and new
//! values together) before `servers.json`, so a crash between the two leaves a value the
//! registry does not name, never a name without its value; values no longer named are
//! dropped from the secrets file only after `servers.json` was written. At start, a
//! `servers.json` holding values (written by an earlier version) is migrated the same way:
//! secrets first, durably, then the masked registry. A secrets file this daemon does not
//! understand is left alone and reported, and nothing is migrated.

use crate::spec::{ServerSpec, REGISTRY_FILE};
use crate::state::StateDir;
use std::collections::BTreeMap;

/// The state file of the values.
pub const SECRETS_FILE: &str = "secrets.json";
/// What stands for a value wherever it is shown or stored outside the secrets file.
pub const MASK: &str = "***";

/// Values by server id, then variable name.
pub type Secrets = BTreeMap<String, BTreeMap<String, String>>;

/// `spec` with every environment value masked.
pub fn masked(spec: &ServerSpec) -> ServerSpec {
    let mut s = spec.clone();
    for v in s.env.values_mut() {
        *v = MASK.to_string();
    }
    s
}

/// The values of `specs` (servers without environment are left out).
pub fn secrets_of(specs: &[ServerSpec]) -> Secrets {
    specs
        .iter()
        .filter(|s| !s.env.is_empty())
        .map(|s| (s.id.clone(), s.env.clone()))
        .collect()
}

/// `a` with `b`'s entries added (`b` wins on the same server and name).
pub fn union(mut a: Secrets, b: &Secrets) -> Secrets {
    for (id, env) in b {
        a.entry(id.clone())
            .or_default()
            .extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    a
}

/// Puts the values of `secrets` back into `specs` (masked ones only). Returns the specs,
/// and whether any spec held a value in the clear (so the registry needs migrating), and the
/// masked names with no value in `secrets` (`server.NAME`).
pub fn restore(
    mut specs: Vec<ServerSpec>,
    secrets: &Secrets,
) -> (Vec<ServerSpec>, bool, Vec<String>) {
    let mut clear = false;
    let mut missing = Vec::new();
    for spec in &mut specs {
        let values = secrets.get(&spec.id);
        for (name, value) in spec.env.iter_mut() {
            if value == MASK {
                match values.and_then(|v| v.get(name)) {
                    Some(v) => value.clone_from(v),
                    None => missing.push(format!("{}.{name}", spec.id)),
                }
            } else {
                clear = true;
            }
        }
    }
    (specs, clear, missing)
}

/// At start: the registered specs with their values, migrating a `servers.json` that holds
/// values in the clear (secrets written durably first, then the masked registry).
pub fn load(state: &mut StateDir, specs: Vec<ServerSpec>) -> Vec<ServerSpec> {
    let secrets = match state.read::<Secrets>(SECRETS_FILE) {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            log::error!(
                "{SECRETS_FILE}: {e}; left alone: servers keep the masked values of their \
                 environment and {REGISTRY_FILE} is not migrated"
            );
            return specs;
        }
    };
    let (specs, clear, missing) = restore(specs, &secrets);
    for m in &missing {
        log::error!(
            "no value for environment variable {m} in {SECRETS_FILE}: the server gets {MASK:?}"
        );
    }
    if clear {
        let all = union(secrets, &secrets_of(&specs));
        let masked: Vec<ServerSpec> = specs.iter().map(masked).collect();
        // The registry is written twice: each write keeps the previous document as
        // `.bak`, which must not go on holding the values in the clear.
        let moved = state
            .write(SECRETS_FILE, &all)
            .and_then(|()| state.write(REGISTRY_FILE, &masked))
            .and_then(|()| state.write(REGISTRY_FILE, &masked));
        match moved {
            Ok(()) => log::info!(
                "moved the environment values of registered servers from {REGISTRY_FILE} to {SECRETS_FILE}"
            ),
            Err(e) => log::error!(
                "environment values not moved out of {REGISTRY_FILE}: {e} (they stay where they are)"
            ),
        }
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(id: &str, env: serde_json::Value) -> ServerSpec {
        serde_json::from_value(json!({"id": id, "command": "x", "env": env})).unwrap()
    }

    #[test]
    fn values_are_masked_restored_and_migrated_without_loss() {
        let a = spec("a", json!({"TOKEN": "s3cret", "MODE": "fast"}));
        let m = masked(&a);
        assert_eq!(m.env["TOKEN"], MASK);
        assert_eq!(m.env["MODE"], MASK);
        let secrets = secrets_of(&[a.clone(), spec("b", json!({}))]);
        assert_eq!(secrets.len(), 1, "servers without environment are left out");
        let (back, clear, missing) = restore(vec![m.clone()], &secrets);
        assert_eq!(back[0], a);
        assert!(!clear && missing.is_empty());
        // A registry in the clear (an earlier version's) is flagged for migration.
        let (back, clear, _) = restore(vec![a.clone()], &Secrets::new());
        assert!(clear);
        assert_eq!(back[0], a);
        // A masked name without a value is reported, never invented.
        let (_, _, missing) = restore(vec![m], &Secrets::new());
        assert_eq!(missing, ["a.MODE", "a.TOKEN"]);
        let u = union(
            secrets.clone(),
            &secrets_of(&[spec("a", json!({"NEW": "1"}))]),
        );
        assert_eq!(u["a"].len(), 3);
    }

    #[test]
    fn a_registry_in_the_clear_is_migrated_at_load() {
        let dir = std::env::temp_dir().join(format!("vsm-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut state = StateDir::open(&dir).unwrap();
        let specs = vec![spec("a", json!({"TOKEN": "s3cret"}))];
        state.write(REGISTRY_FILE, &specs).unwrap();
        let loaded = load(&mut state, specs.clone());
        assert_eq!(loaded, specs);
        let on_disk = std::fs::read_to_string(dir.join(REGISTRY_FILE)).unwrap();
        assert!(
            !on_disk.contains("s3cret") && on_disk.contains(MASK),
            "{on_disk}"
        );
        let bak = std::fs::read_to_string(dir.join(format!("{REGISTRY_FILE}.bak"))).unwrap();
        assert!(
            !bak.contains("s3cret"),
            "the backup holds no value either: {bak}"
        );
        let kept = std::fs::read_to_string(dir.join(SECRETS_FILE)).unwrap();
        assert!(kept.contains("s3cret"), "{kept}");
        let masked_specs: Vec<ServerSpec> = state.read(REGISTRY_FILE).unwrap().unwrap();
        assert_eq!(
            load(&mut state, masked_specs),
            specs,
            "restored on the next start"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
