//! Configuration through `wasi:config/store`, and the one mapping from the check's keys to the
//! variable names the platforms allow.
//!
//! The probe asks for keys in the doctor's `Section:Name` form (`OCI:RegistryUrl`). Spin
//! variables may hold only lower-case letters, digits and single underscores, so every key is
//! read under its snake_case spelling: `OCI:RegistryUrl` is `oci_registry_url`,
//! `Registry:Password` is `registry_password`. [`platform_key`] is the only place that spelling
//! is decided, and only keys the check's metadata declares are ever read.
//!
//! Spin backs the store with its application variables; `wasmtime serve -S config` with its
//! `-S config-var=NAME=VALUE` options. The two provide different pre-release versions of
//! `wasi:config`, which never link against each other, so the version imported here is chosen
//! at build time by the crate's `spin` feature.

use oci_probe::check;

mod bindings {
    #[cfg(not(feature = "spin"))]
    wit_bindgen::generate!({
        // `wasmtime serve` and wasmtime-wasi-config 48 provide this version.
        world: "wasi:config/imports@0.2.0-rc.1",
        path: "../../wit/deps/config",
    });

    #[cfg(feature = "spin")]
    wit_bindgen::generate!({
        // Spin 3 and 4 provide this version.
        world: "wasi:config/imports@0.2.0-draft-2024-09-27",
        path: "wit/wasi-config-draft-2024-09-27",
    });
}

use bindings::wasi::config::store;

/// The variable name under which the platform holds the check's key `key`.
///
/// `Section:Name` becomes `section_name`, each upper-case letter starting a new word:
/// `OCI:PushTestRepository` is `oci_push_test_repository`. A run of capitals is one word, so
/// `OCI` stays `oci`.
pub fn platform_key(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 4);
    let mut previous: Option<char> = None;
    for c in key.chars() {
        if c == ':' {
            name.push('_');
        } else if c.is_ascii_uppercase() {
            let after_lower =
                previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit());
            if after_lower {
                name.push('_');
            }
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
        previous = Some(c);
    }
    name
}

/// Reads the check's key `key` from `wasi:config/store` under its platform name.
///
/// Keys the check's metadata does not declare read as unset, as they do in the doctor host. A
/// store failure is logged and read as unset: the check then skips or names the key, which
/// points the operator at the right variable even when the store itself is at fault.
pub fn lookup(key: &str) -> Option<String> {
    if !is_declared(key) {
        return None;
    }
    let name = platform_key(key);
    match store::get(&name) {
        Ok(value) => value,
        Err(error) => {
            eprintln!(
                "warning: reading `{name}` (`{key}`) from `wasi:config/store` failed: {error:?}"
            );
            None
        }
    }
}

/// The values of every key the check declares secret, as `lookup` returns them.
pub fn secret_values(lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    check::metadata()
        .config_keys
        .into_iter()
        .filter(|key| key.secret)
        .filter_map(|key| lookup(&key.name))
        .filter(|value| !value.is_empty())
        .collect()
}

/// The basic-auth user names paired with secrets, as `lookup` returns them; with the secrets they
/// make the `user:password` pairs whose base64 form must not appear either.
pub fn usernames(lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    use oci_probe::config::keys;

    [keys::OCI_USERNAME, keys::REGISTRY_USERNAME]
        .into_iter()
        .filter_map(lookup)
        .collect()
}

fn is_declared(key: &str) -> bool {
    check::metadata()
        .config_keys
        .iter()
        .any(|declared| declared.name.eq_ignore_ascii_case(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_key_has_the_documented_platform_name() {
        let expected = [
            ("OCI:RegistryUrl", "oci_registry_url"),
            ("Registry:Url", "registry_url"),
            ("OCI:PushTestRepository", "oci_push_test_repository"),
            ("OCI:TestRepository", "oci_test_repository"),
            ("OCI:Username", "oci_username"),
            ("OCI:Password", "oci_password"),
            ("OCI:Token", "oci_token"),
            ("Registry:Username", "registry_username"),
            ("Registry:Password", "registry_password"),
            ("Registry:Token", "registry_token"),
            ("OCI:TimeoutSeconds", "oci_timeout_seconds"),
        ];
        let declared: Vec<String> = check::metadata()
            .config_keys
            .into_iter()
            .map(|key| key.name)
            .collect();

        assert_eq!(declared, expected.map(|(key, _)| key.to_string()));
        for (key, name) in expected {
            assert_eq!(platform_key(key), name, "{key}");
        }
    }

    #[test]
    fn platform_names_are_valid_spin_variable_names() {
        for key in check::metadata().config_keys {
            let name = platform_key(&key.name);
            let valid_chars = name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            assert!(valid_chars, "{name}");
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "{name}");
            assert!(!name.ends_with('_') && !name.contains("__"), "{name}");
        }
    }

    #[test]
    fn secret_values_are_those_of_keys_declared_secret() {
        let values = secret_values(|key| match key {
            "OCI:Password" => Some("pw".to_string()),
            "OCI:Token" => Some(String::new()),
            "OCI:Username" => Some("robot".to_string()),
            _ => None,
        });

        assert_eq!(values, ["pw"]);
    }
}
