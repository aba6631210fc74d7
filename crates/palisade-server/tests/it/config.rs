//! Configuration: errors name the field.
use palisade_server::ServerConfig;

#[track_caller]
fn refused(toml: &str, field: &str) {
    let err = ServerConfig::from_toml(toml).expect_err(toml);
    assert_eq!(err.field(), field, "{toml:?}: {err}");
    assert!(err.to_string().contains(field), "{err}");
}

#[test]
fn config_errors_name_the_field() {
    refused("colour = \"red\"", "colour");
    refused("listen = \"nope\"", "listen");
    refused("listen = 8443", "listen");
    refused("database = \"mysql://db/x\"", "database");
    refused("tls_names = []", "tls_names");
    refused("tls_names = [\"ok.example\", \"bad name\"]", "tls_names[1]");
    refused("max_body_bytes = \"big\"", "max_body_bytes");
    refused("max_body_bytes = 10", "max_body_bytes");
    // Below what an agent's event batch or an inventory batch may need.
    refused("max_body_bytes = 65536", "max_body_bytes");
    refused("db_max_connections = 0", "db_max_connections");
    refused("change_retention_days = 0", "change_retention_days");
    refused("event_retention_days = 36501", "event_retention_days");
    refused("event_retention_days = -1", "event_retention_days");
    refused(
        "deleted_instance_retention_days = 36501",
        "deleted_instance_retention_days",
    );
    refused("catalog_queue = 0", "catalog_queue");
    // Would have reached the channel and panicked at start.
    refused("catalog_queue = 4611686018427387904", "catalog_queue");
    refused("shutdown_grace_secs = -1", "shutdown_grace_secs");
    refused("[listen]\nport = 1", "listen");
    refused("alerts_local_syslog = 1", "alerts_local_syslog");
}

#[test]
fn config_defaults_and_values() {
    let c = ServerConfig::from_toml("").expect("empty is valid");
    assert_eq!(c, ServerConfig::default());
    assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
    assert!(c.database.starts_with("sqlite:"));
    for n in ["localhost", "127.0.0.1", "::1"] {
        assert!(c.tls_names.iter().any(|t| t == n), "{n}");
    }
    let c = ServerConfig::from_toml(
        "listen = \"0.0.0.0:9443\"\n\
         database = \"postgres://u:p@db:5432/palisade\"\n\
         tls_names = [\"palisade.example.com\", \"10.0.0.5\"]\n\
         shutdown_grace_secs = 5\n",
    )
    .expect("valid");
    assert_eq!(c.listen.port(), 9443);
    assert_eq!(c.tls_names.len(), 2);
    assert_eq!(c.shutdown_grace_secs, 5);
    assert_eq!(c.max_body_bytes, 8 * 1024 * 1024);
    // Alerts reach public addresses only unless the operator says otherwise.
    assert!(!c.alerts_allow_private_addresses && !c.alerts_local_syslog);
    let c = ServerConfig::from_toml(
        "alerts_allow_private_addresses = true\nalerts_local_syslog = true\n",
    )
    .expect("valid");
    assert!(c.alerts_allow_private_addresses && c.alerts_local_syslog);
}
