//! Configuration as an operator meets it: flags over environment over file
//! over defaults, `--help`, `print-config`, and errors that name the setting.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use clap::Parser;
use roomcast::config::{Cli, Config, SETTINGS};

fn roomcast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_roomcast"))
}

fn write_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("roomcast-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn resolve(
    args: &[&str],
    file: Option<&std::path::Path>,
) -> Result<Config, roomcast::config::ConfigError> {
    let cli = Cli::try_parse_from(std::iter::once("roomcast").chain(args.iter().copied())).unwrap();
    Config::resolve(cli.settings, file)
}

#[test]
fn a_flag_beats_the_file_which_beats_the_default() {
    let file = write_file("precedence.toml", "workers = 3\nmax-message-size = 4096\nslow_consumer = \"drop-oldest\"\nping_interval = \"7s\"\n");
    let from_file = resolve(&[], Some(&file)).unwrap();
    assert_eq!(from_file.workers, 3);
    assert_eq!(from_file.max_message_size, 4096);
    assert_eq!(from_file.ping_interval, Duration::from_secs(7));
    assert_eq!(from_file.slow_consumer.to_string(), "drop-oldest");
    let flagged = resolve(&["--workers", "2", "--ping-interval", "250ms"], Some(&file)).unwrap();
    assert_eq!(flagged.workers, 2);
    assert_eq!(flagged.ping_interval, Duration::from_millis(250));
    assert_eq!(
        flagged.max_message_size, 4096,
        "unflagged settings still come from the file"
    );
    let defaults = resolve(&[], None).unwrap();
    assert_eq!(defaults.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(defaults.path, "/ws");
    assert_eq!(defaults.max_message_size, 65_536);
    assert_eq!(defaults.outbound_max_bytes, 262_144);
}

#[test]
fn invalid_settings_fail_with_a_message_that_names_them() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--workers", "0"], "", "workers"),
        (&["--workers", "500"], "", "workers"),
        (&["--max-header-bytes", "100"], "", "max_header_bytes"),
        (&["--max-message-size", "1048576"], "", "outbound_max_bytes"),
        (&[], "max_fragments = 0\n", "max_fragments"),
        (&[], "slow_consumer = \"ignore\"\n", "slow_consumer"),
        (&[], "handshake_timeout = \"soon\"\n", "handshake_timeout"),
        (&[], "listen = \"nowhere\"\n", "listen"),
        (&[], "max_conections = 5\n", "max_conections"),
        (&[], "path = \"ws\"\n", "path"),
    ];
    for (args, file, setting) in cases {
        let path = write_file("invalid.toml", file);
        let error = resolve(args, Some(&path)).expect_err(setting).to_string();
        assert!(error.contains(setting), "{error:?} should name {setting}");
    }
}

#[test]
fn environment_variables_sit_between_flags_and_the_file() {
    let file = write_file(
        "env.toml",
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 3\npin_cores = false\n",
    );
    let started = |extra_args: &[&str], env_workers: Option<&str>| -> String {
        let mut command = roomcast();
        command
            .arg("--config")
            .arg(&file)
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(w) = env_workers {
            command.env("ROOMCAST_WORKERS", w);
        }
        let mut child = command.spawn().unwrap();
        let line = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .next()
            .unwrap()
            .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        line
    };
    assert!(started(&[], None).ends_with("with 3 workers"), "file");
    assert!(
        started(&[], Some("2")).ends_with("with 2 workers"),
        "environment over file"
    );
    assert!(
        started(&["--workers", "1"], Some("2")).ends_with("with 1 workers"),
        "flag over environment"
    );
}

#[test]
fn the_binary_refuses_a_bad_setting_with_exit_code_2() {
    let Output { status, stderr, .. } = roomcast().args(["--workers", "0"]).output().unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(String::from_utf8_lossy(&stderr).contains("`workers`"));
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let help = String::from_utf8(roomcast().arg("--help").output().unwrap().stdout).unwrap();
    for setting in SETTINGS {
        let flag = format!("--{}", setting.name.replace('_', "-"));
        assert!(help.contains(&flag), "--help lacks {flag}");
        assert!(help.contains(setting.env), "--help lacks {}", setting.env);
    }
}

#[test]
fn print_config_uncommented_is_a_valid_config_equal_to_the_defaults() {
    let text = String::from_utf8(roomcast().arg("print-config").output().unwrap().stdout).unwrap();
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            SETTINGS
                .iter()
                .any(|s| l.starts_with(&format!("{} = ", s.name)))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        uncommented.lines().count(),
        SETTINGS.len(),
        "every setting is printed"
    );
    let path = write_file(
        "printed.toml",
        &uncommented.replace("workers = \"available cores\"\n", ""),
    );
    let printed = resolve(&[], Some(&path)).unwrap();
    let defaults = Config::default();
    assert_eq!(format!("{printed:?}"), format!("{defaults:?}"));
}

#[test]
fn the_readme_documents_every_setting() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for setting in SETTINGS {
        assert!(
            readme.contains(&format!("`{}`", setting.name)),
            "README lacks `{}`",
            setting.name
        );
        assert!(readme.contains(setting.env), "README lacks {}", setting.env);
    }
}

#[test]
fn room_rules_come_from_toml_tables_or_one_line_and_the_first_match_wins() {
    let file = write_file(
        "rooms.toml",
        r#"history_size = 5
presence = true

[[rooms]]
match = "ticks.*"
history_size = 1000
history_ttl = "30s"

[[rooms]]
match = "chat.*"
join_leave = true
"#,
    );
    let config = resolve(&[], Some(&file)).unwrap();
    let ticks = config.room_options("ticks.btc");
    assert_eq!(ticks.history_size, 1000);
    assert_eq!(ticks.history_ttl, Duration::from_secs(30));
    assert!(ticks.presence, "left out by the rule: the flat default");
    let chat = config.room_options("chat.lobby");
    assert_eq!(chat.history_size, 5);
    assert!(chat.presence && chat.join_leave);
    let other = config.room_options("misc");
    assert_eq!(other.history_size, 5);
    assert!(!other.join_leave);
    // The same rules in one line, as a flag; the flag beats the file.
    let flagged = resolve(
        &["--rooms", r#"[{ match = "chat.*", history_size = 7 }]"#],
        Some(&file),
    )
    .unwrap();
    assert_eq!(flagged.room_options("chat.lobby").history_size, 7);
    assert_eq!(flagged.room_options("ticks.btc").history_size, 5);
    // A misspelt key in a rule is named.
    let bad = write_file(
        "bad-rooms.toml",
        "[[rooms]]\nmatch = \"a\"\nhistory_sise = 1\n",
    );
    let error = resolve(&[], Some(&bad)).unwrap_err().to_string();
    assert!(
        error.contains("rooms") && error.contains("history_sise"),
        "{error}"
    );
}
