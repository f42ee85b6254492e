//! The deployment examples: every config embedded in a Kubernetes manifest is accepted by the
//! real config parser (the schemas and security policies are checked by .ci/check-deploy.sh).

use std::path::Path;

use originguard::config::{Config, UpstreamTarget};

/// The `originguard.toml: |` blocks of a manifest, dedented.
fn embedded_configs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut configs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() != "originguard.toml: |" {
            continue;
        }
        let key_indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
            .copied()
            .collect();
        let indent = block
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .min()
            .unwrap_or(0);
        configs.push(
            block
                .iter()
                .map(|l| l.get(indent..).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    configs
}

#[test]
fn every_manifest_config_parses_and_keeps_admin_inside_the_pod() {
    let mut seen = 0;
    for name in ["sidecar.yaml", "gateway.yaml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/kubernetes")
            .join(name);
        let yaml = std::fs::read_to_string(&path).expect("read manifest");
        let configs = embedded_configs(&yaml);
        assert_eq!(configs.len(), 1, "{name}: one embedded config");
        for text in configs {
            let config = Config::from_toml(&path, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(config.client_auth.verify_depth == 1, "{name}: AOP depth");
            assert!(config.listener.shutdown_delay > std::time::Duration::ZERO, "{name}");
            assert!(config.admin.is_some(), "{name}: probes need the admin listener");
            // Services route only the TLS port: the admin port stays inside the pod.
            let targets: Vec<&str> = yaml
                .lines()
                .filter_map(|l| l.trim().strip_prefix("targetPort: "))
                .collect();
            assert_eq!(targets, ["https"], "{name}");
            if name == "gateway.yaml" {
                assert!(matches!(config.upstream.target, UpstreamTarget::Https(_)), "{name}");
                assert!(config.tls.ticket_keys.is_some(), "{name}: replicas share tickets");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 2);
}

#[test]
fn no_manifest_runs_a_floating_latest_image() {
    for name in ["sidecar.yaml", "sidecar-classic.yaml", "gateway.yaml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/kubernetes")
            .join(name);
        let yaml = std::fs::read_to_string(&path).expect("read manifest");
        for image in yaml.lines().filter_map(|l| l.trim().strip_prefix("image: ")) {
            assert!(image.contains(':') && !image.ends_with(":latest"), "{name}: {image}");
        }
        assert!(yaml.contains("type: RuntimeDefault"), "{name}: seccomp");
    }
}
