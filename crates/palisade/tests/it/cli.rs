//! The binary's surface without enforcement: configuration errors name
//! their field, bad arguments are refused clearly.
use crate::harness::*;

fn stderr_of(args: &[&str]) -> (Option<i32>, String) {
    let r = run(BIN, args, &[("PALISADE_LOG", "warn")]);
    (r.spawn.as_ref().ok().and_then(|s| s.code()), r.stderr)
}

#[test]
fn invalid_agent_configuration_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str, field: &str| {
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, text).unwrap();
        let (code, err) = stderr_of(&["agent", "--config", p.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(field), "error should name {field}: {err}");
    };
    check("workers = 0\n", "workers");
    check("decision_deadline_ms = \"soon\"\n", "decision_deadline_ms");
    check("wacth = [\"/\"]\n", "wacth");
    check("watch = [\"relative/path\"]\n", "watch");
}

#[test]
fn invalid_server_configuration_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("server.toml");
    std::fs::write(&p, "listen = \"not an address\"\n").unwrap();
    let (code, err) = stderr_of(&["server", "--config", p.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("listen"), "{err}");
    std::fs::write(&p, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let (_, err) = stderr_of(&["server", "--config", p.to_str().unwrap()]);
    assert!(err.contains("lisen"), "{err}");
}

#[test]
fn bad_arguments_are_refused_with_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cli.toml");
    let (code, err) = stderr_of(&["policy", "set-level", "default", "strict"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("lockdown"), "{err}");
    std::fs::write(
        &cfg,
        "server = \"https://127.0.0.1:1\"\nca_cert = \"/nonexistent\"\ntoken = \"x\"\n",
    )
    .unwrap();
    let r = run(
        BIN,
        &["file", "approve", "/definitely/not/here"],
        &[("PALISADE_CLI_CONFIG", cfg.to_str().unwrap())],
    );
    assert!(!r.ok());
    let r = run(
        BIN,
        &[
            "status",
            "--socket",
            dir.path().join("nope.sock").to_str().unwrap(),
        ],
        &[],
    );
    assert!(!r.ok() && r.stderr.contains("no agent"), "{r:?}");
}

/// The service is reached over HTTPS only: an `http://` URL is refused
/// before anything is sent, saying why.
#[test]
fn plain_http_service_urls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = stderr_of(&[
        "agent",
        "enroll",
        "--server",
        "http://127.0.0.1:1",
        "--token",
        "plt1.x.y",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("https://, not http://"), "{err}");
    let cfg = dir.path().join("cli.toml");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "server = \"http://127.0.0.1:1\"\nca_cert = \"{}\"\ntoken = \"x\"\n",
            ca.display()
        ),
    )
    .unwrap();
    let r = run(
        BIN,
        &["policy", "list"],
        &[("PALISADE_CLI_CONFIG", cfg.to_str().unwrap())],
    );
    assert!(!r.ok());
    assert!(r.stderr.contains("https://, not http://"), "{r:?}");
}
