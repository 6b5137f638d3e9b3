//! The configuration contract: defaults, environment overrides, and bad
//! values that name their key.

use feed_server::settings::{LogFormat, LogLevel, Settings, SettingsError};

use super::workspace;

fn load(env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let path = workspace().join("config/default.toml");
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    Settings::load(&path, env).map(|(settings, _)| settings)
}

/// Loading fails with a message that contains `key`.
fn check_rejected(env: &[(&str, &str)], key: &str) {
    match load(env) {
        Ok(_) => panic!("{env:?} was accepted"),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(key),
                "{env:?}: {message:?} does not name {key}"
            );
            assert!(!message.contains('\n'), "{message:?} is not one line");
        }
    }
}

#[test]
fn the_default_file_holds_the_documented_defaults() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.server.host, "0.0.0.0");
    assert_eq!(settings.server.port, 8080);
    assert_eq!(settings.server.workers, 0);
    assert!(settings.workers() >= 1);
    assert_eq!(
        (settings.api.default_size, settings.api.max_size),
        (10, 200)
    );
    assert_eq!(settings.data.users, 1_000_000);
    assert_eq!(settings.data.feed_len, 200);
    assert_eq!(settings.data.catalog_size, 10_000_000);
    assert_eq!(settings.log.level, LogLevel::Info);
    assert_eq!(settings.log.format, LogFormat::Text);
}

#[test]
fn environment_variables_override_the_file() {
    let settings = load(&[
        ("FEED__SERVER__PORT", "9000"),
        ("FEED__DATA__USERS", "100000"),
        ("FEED__LOG__FORMAT", "json"),
        ("FEED__API__MAX_SIZE", "50"),
        ("UNRELATED", "1"),
    ])
    .unwrap();
    assert_eq!(settings.server.port, 9000);
    assert_eq!(settings.data.users, 100_000);
    assert_eq!(settings.log.format, LogFormat::Json);
    assert_eq!(settings.api.max_size, 50);
}

#[test]
fn bad_values_name_their_key() {
    check_rejected(&[("FEED__SERVER__PORT", "abc")], "server.port");
    check_rejected(&[("FEED__SERVER__PORT", "70000")], "server.port");
    check_rejected(&[("FEED__API__MAX_SIZE", "0")], "api.max_size");
    check_rejected(&[("FEED__API__MAX_SIZE", "10001")], "api.max_size");
    check_rejected(&[("FEED__API__DEFAULT_SIZE", "300")], "api.default_size");
    check_rejected(&[("FEED__DATA__FEED_LEN", "0")], "data.feed_len");
    check_rejected(&[("FEED__DATA__CATALOG_SIZE", "100")], "data.catalog_size");
    check_rejected(&[("FEED__DATA__USERS", "-5")], "data.users");
    check_rejected(&[("FEED__LOG__LEVEL", "loud")], "log.level");
    check_rejected(&[("FEED__SERVER__HOST", " ")], "server.host");
}

#[test]
fn log_levels_are_read_as_other_loggers_spell_them() {
    for (given, level) in [
        ("warn", LogLevel::Warning),
        ("WARN", LogLevel::Warning),
        ("Warning", LogLevel::Warning),
        ("error", LogLevel::Error),
        ("Info", LogLevel::Info),
        ("TRACE", LogLevel::Trace),
    ] {
        let settings = load(&[("FEED__LOG__LEVEL", given)]).unwrap();
        assert_eq!(settings.log.level, level, "{given}");
    }
}

#[test]
fn limits_must_be_ones_the_server_can_enforce() {
    // The HTTP parser refuses heads of 128 KiB itself: a limit there or
    // above would never answer.
    check_rejected(
        &[("FEED__LIMITS__MAX_URL_BYTES", "131072")],
        "limits.max_url_bytes",
    );
    check_rejected(
        &[("FEED__LIMITS__MAX_HEADER_BYTES", "200000")],
        "limits.max_header_bytes",
    );
    assert!(load(&[("FEED__LIMITS__MAX_HEADER_BYTES", "131071")]).is_ok());
    check_rejected(
        &[("FEED__LIMITS__RATE_LIMIT_CLIENTS", "0")],
        "limits.rate_limit_clients",
    );
}

#[test]
fn a_snapshot_source_needs_a_file_and_watching_needs_a_snapshot() {
    check_rejected(&[("FEED__DATA__SOURCE", "snapshot")], "data.snapshot");
    check_rejected(&[("FEED__DATA__SOURCE", "parquet")], "data.source");
    check_rejected(&[("FEED__DATA__WATCH", "true")], "data.watch");
    let settings = load(&[
        ("FEED__DATA__SOURCE", "snapshot"),
        ("FEED__DATA__SNAPSHOT", "feeds.snap"),
        ("FEED__DATA__WATCH", "true"),
    ])
    .unwrap();
    assert_eq!(settings.data.snapshot_path(), Some("feeds.snap".into()));
}

#[test]
fn unknown_keys_are_rejected() {
    check_rejected(&[("FEED__SERVER__PORTX", "1")], "portx");
    check_rejected(&[("FEED__NOPE", "1")], "nope");
}

#[test]
fn proxy_ranges_and_admin_credentials_are_checked() {
    let settings = load(&[]).unwrap();
    assert!(settings.limits.trusted_proxies().unwrap().is_empty());
    assert!(settings.admin.access().unwrap().is_open());
    assert!(!settings.admin.allow_open);
    assert!(!settings.admin.metrics_token_required);

    let settings = load(&[("FEED__LIMITS__TRUSTED_PROXIES", "127.0.0.1/32, fd00::/8")]).unwrap();
    assert_eq!(settings.limits.trusted_proxies().unwrap().ranges().len(), 2);
    check_rejected(
        &[("FEED__LIMITS__PROXY_PROTOCOL", "true")],
        "limits.proxy_protocol",
    );

    // A file written before `proxy_protocol` existed still loads, with it off.
    let older = std::fs::read_to_string(workspace().join("config/default.toml"))
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("proxy_protocol"))
        .collect::<Vec<_>>()
        .join("\n");
    let path = super::server::scratch_dir("config-older").join("older.toml");
    std::fs::write(&path, older).unwrap();
    let (settings, _) = Settings::load(&path, std::iter::empty()).unwrap();
    assert!(!settings.limits.proxy_protocol);
    for bad in ["10.0.0.0/33", "10.0.0.1/8", "10.0.0.0/8;", "haproxy"] {
        check_rejected(
            &[("FEED__LIMITS__TRUSTED_PROXIES", bad)],
            "limits.trusted_proxies",
        );
    }

    // Beyond loopback: a token, or allow_open.
    for host in ["0.0.0.0", "::", "10.1.2.3", "admin.internal"] {
        check_rejected(&[("FEED__ADMIN__HOST", host)], "admin.token");
        assert!(
            load(&[
                ("FEED__ADMIN__HOST", host),
                ("FEED__ADMIN__ALLOW_OPEN", "true")
            ])
            .is_ok()
        );
    }
    for host in ["127.0.0.1", "127.9.9.9", "::1", "localhost"] {
        assert!(load(&[("FEED__ADMIN__HOST", host)]).is_ok(), "{host}");
    }
    // A token of digits is kept as written, and never shown.
    let settings = load(&[
        ("FEED__ADMIN__HOST", "0.0.0.0"),
        ("FEED__ADMIN__TOKEN", "0012345678901234"),
    ])
    .unwrap();
    assert_eq!(settings.admin.token, "0012345678901234");
    assert!(!settings.admin.access().unwrap().is_open());
    assert!(!format!("{settings:?}").contains("0012345678901234"));

    check_rejected(&[("FEED__ADMIN__TOKEN", "too-short")], "admin.token");
    check_rejected(
        &[("FEED__ADMIN__TOKEN", "has a space in it, 0123")],
        "admin.token",
    );
    check_rejected(
        &[
            ("FEED__ADMIN__TOKEN", "0123456789abcdef"),
            ("FEED__ADMIN__TOKEN_FILE", "token"),
        ],
        "admin.token_file",
    );
    check_rejected(
        &[("FEED__ADMIN__TOKEN_FILE", "/nonexistent/token")],
        "admin.token_file",
    );
}
