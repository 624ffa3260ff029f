//! The container image (Dockerfile), run with podman as the original ran on EKS: the
//! source document's acceptance test (ab, 1000 POSTs, 1000 messages byte-equal) against a
//! broker on the host; a missing topic and a broker down, with the failure lines in the
//! pod's own file (error-POD_NAME.log) in a host directory mounted where the EFS volume goes;
//! a stop that flushes and logs what it could not deliver. `make test-container` builds the
//! image (scripts/container.sh) and runs this with NGINX_KAFKA_IMAGE set.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::mocking::MockCluster;

fn image() -> String {
    std::env::var("NGINX_KAFKA_IMAGE").unwrap_or_else(|_| "localhost/nginx-kafka:test".into())
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .env("CONTAINERS_CONF", repo().join("scripts/containers.conf"))
        .args(args)
        .output()
        .expect("podman runs (make test-container installs it)")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A container of ours, removed when the test ends however it ends.
struct Container(String);

impl Container {
    /// The image on the host's network (its broker is on 127.0.0.1), `dir` mounted at
    /// /var/log/nginx.
    fn run(dir: &Path, env: &[(&str, String)]) -> Container {
        let volume = format!("{}:/var/log/nginx", dir.display());
        let mut args = vec!["run", "-d", "--network", "host", "-v", &volume];
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for e in &env {
            args.extend(["-e", e.as_str()]);
        }
        let image = image();
        args.push(&image);
        Container(podman_ok(&args))
    }

    fn logs(&self) -> String {
        let out = podman(&["logs", &self.0]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

fn status(port: u16, path: &str) -> Option<u16> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(Http::connect(port).request("GET", path, &[], b"").status)
}

fn ab(port: u16, topic: &str, n: usize) -> String {
    let out = Command::new("ab")
        .args([
            "-q",
            "-T",
            "application/json",
            "-H",
            &format!("topic: {topic}"),
        ])
        .args(["-n", &n.to_string(), "-p"])
        .arg(repo().join("nginx/postdata.json"))
        .arg(format!("http://127.0.0.1:{port}/putmessage"))
        .output()
        .expect("ab (apt: apache2-utils) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `n` events `{"TAG":i}` to /putmessage (topic my-poc-topic-01) on one connection, each
/// answered 204.
fn post_events(port: u16, tag: &str, n: usize) -> Vec<Vec<u8>> {
    let mut http = Http::connect(port);
    (0..n)
        .map(|i| {
            let event = format!("{{\"{tag}\":{i}}}").into_bytes();
            let r = http.request(
                "POST",
                "/putmessage",
                &[("topic", "my-poc-topic-01")],
                &event,
            );
            assert_eq!(r.status, 204, "{}", r.text());
            event
        })
        .collect()
}

#[test]
#[ignore = "needs the image: make test-container"]
fn image_serves_the_acceptance_test_and_logs_failures_per_pod() {
    let size = podman_ok(&["image", "inspect", &image(), "--format", "{{.Size}}"]);
    println!("image {} is {size} bytes", image());

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("my-poc-topic-01", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let logs = TempDir::new("container-efs");
    // The container's user (101) writes here, as on the EFS access point.
    std::fs::set_permissions(&logs.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let port = free_port();
    let c = Container::run(
        &logs.0,
        &[
            ("KAFKA_BROKERS", brokers.clone()),
            ("NGINX_PORT", port.to_string()),
            ("POD_NAME", "pod-a".into()),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(port, "/ready") != Some(200) {
        assert!(Instant::now() < deadline, "never ready:\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(podman_ok(&["exec", &c.0, "id", "-u"]), "101", "not root");
    assert!(c
        .logs()
        .contains("rendered /etc/nginx/templates/default.conf.template"));

    // The source document's test.
    let report = ab(port, "my-poc-topic-01", 1000);
    assert!(report.contains("Complete requests:      1000"), "{report}");
    assert!(!report.contains("Non-2xx responses"), "{report}");
    let records = consume(&brokers, "my-poc-topic-01", 1001, Duration::from_secs(5));
    assert_eq!(records.len(), 1000);
    let body = std::fs::read(repo().join("nginx/postdata.json")).unwrap();
    assert!(records.iter().all(|r| r.value == body));

    // Its second part: a topic that does not exist. The module answers 404 at once (the
    // Lua collector answered 200 and lost them): nothing accepted, nothing to lose.
    let report = ab(port, "my-poc-topic-noexist", 10);
    assert!(report.contains("Non-2xx responses:      10"), "{report}");

    // The broker goes away: events are still answered (queued); the stop flushes for
    // kafka_flush_timeout, then logs each one it could not deliver, payload and all.
    cluster.broker_down(1).unwrap();
    let mut sent = post_events(port, "container", 200);
    let started = Instant::now();
    podman_ok(&["stop", "-t", "40", &c.0]);
    let took = started.elapsed();
    let exit = podman_ok(&["inspect", &c.0, "--format", "{{.State.ExitCode}}"]);
    assert_eq!(exit, "0", "a graceful stop:\n{}", c.logs());
    assert!(
        took < Duration::from_secs(40),
        "stopped by QUIT, not killed: {took:?}"
    );

    let names: Vec<String> = std::fs::read_dir(&logs.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"error-pod-a.log".to_string()), "{names:?}");
    let access = std::fs::read_to_string(logs.0.join("access-pod-a.log")).unwrap();
    assert_eq!(access.matches("\" 404 ").count(), 10, "{access}");
    assert_eq!(access.matches("\" 204 ").count(), 1200, "{access}");
    let log = std::fs::read_to_string(logs.0.join("error-pod-a.log")).unwrap();
    let mut logged = undelivered_payloads(&log);
    logged.sort();
    sent.sort();
    assert_eq!(
        logged, sent,
        "every answered, undelivered event is in error-pod-a.log"
    );
    // The workers' lifecycle lines go to the main error log: the container's output.
    assert_eq!(exit_counts(&c.logs()), (1000, 200), "{}", c.logs());
}

/// `kubectl kustomize` of a directory.
fn kustomize(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(dir)
        .output()
        .expect("kubectl runs (make test-container installs it)");
    assert!(
        out.status.success(),
        "kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubernetes-validate --strict` on files, for Kubernetes 1.30.
fn validate(files: &[std::path::PathBuf]) {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.30.0"])
        .args(files)
        .output()
        .expect("kubernetes-validate (PyPI) runs (make test-container installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

/// Every manifest of deploy/kubernetes, and what kustomize makes of the base and of each
/// overlay, passes `kubernetes-validate --strict`.
#[test]
#[ignore = "needs kubectl and kubernetes-validate: make test-container"]
fn manifests_validate_strictly() {
    let deploy = repo().join("deploy/kubernetes");
    let dir = TempDir::new("kustomized");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(deploy.join("base"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    let mut rendered = vec![("base".to_string(), deploy.join("base"))];
    for e in std::fs::read_dir(deploy.join("overlays"))
        .unwrap()
        .flatten()
    {
        rendered.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    assert!(
        rendered.len() >= 3,
        "base and the MSK overlays: {rendered:?}"
    );
    for (name, path) in &rendered {
        let out = dir.0.join(format!("{name}.yaml"));
        let text = kustomize(path);
        for kind in [
            "StorageClass",
            "PersistentVolumeClaim",
            "ConfigMap",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
        ] {
            assert!(
                text.contains(&format!("kind: {kind}\n")),
                "{name}: no {kind}"
            );
        }
        std::fs::write(&out, text).unwrap();
        files.push(out);
    }
    validate(&files);
}

/// The base as kustomize renders it, made for this machine by an overlay of the test's
/// (the local image, the test's broker and port, one replica, the host's network), run by
/// `podman kube play`: the acceptance test through the pod, and the pod's error log in the
/// claim's volume under the pod's name. On the host's network podman refuses port
/// mappings, and it would run the probes inside the container (with a curl the image does
/// not have), so the overlay takes out the ports and the probes; the test asks /ready itself.
/// Podman 4.3 has no `status.podIP` for the downward API: the overlay gives POD_IP a value.
#[test]
#[ignore = "needs the image: make test-container"]
fn kube_play_serves_the_acceptance_test() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("my-poc-topic-01", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let port = free_port();
    let dir = TempDir::new("kube-play");
    let overlay = dir.0.join("overlay");
    std::fs::create_dir(&overlay).unwrap();
    let (name, tag) = image()
        .rsplit_once(':')
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\n\
             kind: Kustomization\n\
             resources:\n  - {base}\n\
             images:\n  - name: nginx-kafka\n    newName: {name}\n    newTag: \"{tag}\"\n\
             replicas:\n  - name: nginx-kafka\n    count: 1\n\
             patches:\n  - path: here.yaml\n\
             \x20 - target: {{kind: Deployment, name: nginx-kafka}}\n\
             \x20   patch: |-\n\
             \x20     - op: remove\n        path: /spec/template/spec/containers/0/ports\n\
             \x20     - op: remove\n        path: /spec/template/spec/containers/0/readinessProbe\n\
             \x20     - op: remove\n        path: /spec/template/spec/containers/0/livenessProbe\n",
            // kustomize takes only relative paths: up to / from the overlay, then down.
            base = "../".repeat(overlay.components().count() - 1)
                + repo()
                    .join("deploy/kubernetes/base")
                    .to_str()
                    .unwrap()
                    .trim_start_matches('/')
        ),
    )
    .unwrap();
    std::fs::write(
        overlay.join("here.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nginx-kafka-env\n\
             data:\n  KAFKA_BROKERS: \"{brokers}\"\n\
             ---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nginx-kafka\n\
             spec:\n  template:\n    spec:\n      hostNetwork: true\n      containers:\n\
             \x20       - name: nginx-kafka\n          env:\n\
             \x20           - name: NGINX_PORT\n              value: \"{port}\"\n\
             \x20           - name: POD_IP\n              value: 127.0.0.1\n              valueFrom: null\n"
        ),
    )
    .unwrap();
    // What podman runs of it: the ConfigMaps, the claim and the Deployment.
    let kept: Vec<&str> = Box::leak(kustomize(&overlay).into_boxed_str())
        .split("\n---\n")
        .filter(|doc| {
            ["ConfigMap", "PersistentVolumeClaim", "Deployment"]
                .iter()
                .any(|k| doc.contains(&format!("\nkind: {k}\n")))
        })
        .collect();
    assert_eq!(kept.len(), 4, "{kept:#?}");
    let play = dir.0.join("play.yaml");
    std::fs::write(&play, kept.join("\n---\n")).unwrap();
    let play = play.to_str().unwrap().to_string();

    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = podman(&["kube", "down", &self.0]);
            let _ = podman(&["volume", "rm", "-f", "nginx-kafka-logs"]);
        }
    }
    let _down = Down(play.clone());
    let _ = podman(&["volume", "rm", "-f", "nginx-kafka-logs"]);
    podman_ok(&["kube", "play", "--replace", &play]);

    let deadline = Instant::now() + Duration::from_secs(30);
    while status(port, "/ready") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the pod never got ready: {}",
            podman_ok(&["pod", "ps"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = ab(port, "my-poc-topic-01", 1000);
    assert!(report.contains("Complete requests:      1000"), "{report}");
    assert!(!report.contains("Non-2xx responses"), "{report}");
    let records = consume(&brokers, "my-poc-topic-01", 1001, Duration::from_secs(5));
    let body = std::fs::read(repo().join("nginx/postdata.json")).unwrap();
    assert_eq!(records.len(), 1000);
    assert!(records.iter().all(|r| r.value == body));

    // The pod's error log, named after the pod (the downward API's POD_NAME), in the volume.
    let files = podman_ok(&[
        "run",
        "--rm",
        "-v",
        "nginx-kafka-logs:/v",
        &image(),
        "ls",
        "/v",
    ]);
    assert!(
        files
            .lines()
            .any(|f| f.starts_with("error-nginx-kafka") && f.ends_with(".log")),
        "{files}"
    );
}

/// `make deb`'s package on a fresh Debian 12 (the base image, as a container on the host's
/// network): Debian's nginx installed from Debian's archive, then the package, which enables
/// its snippet in /etc/nginx/modules-enabled; `nginx -t` passes; an event posted to
/// /usr/sbin/nginx reaches Kafka.
#[test]
#[ignore = "needs podman, the base image and build/deb: make test-container"]
fn deb_installs_with_debians_nginx() {
    let debs: Vec<_> = std::fs::read_dir(repo().join("build/deb"))
        .expect("build/deb (make deb)")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = debs[0].file_name().unwrap().to_str().unwrap().to_string();

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("my-poc-topic-01", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let port = free_port();
    let script = format!(
        "set -e\n\
         printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d\n\
         apt-get update -qq\n\
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null\n\
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /debs/{deb} >/dev/null\n\
         rm -f /etc/nginx/sites-enabled/default\n\
         cat >/etc/nginx/conf.d/kafka.conf <<'CONF'\n\
         kafka_brokers {brokers};\n\
         server {{\n\
             listen 127.0.0.1:{port};\n\
             location = /putmessage {{\n\
                 kafka_ingest;\n\
                 kafka_topic $http_topic;\n\
                 kafka_allowed_topics my-poc-topic-*;\n\
             }}\n\
         }}\n\
         CONF\n\
         ls -l /etc/nginx/modules-enabled/\n\
         dpkg -s libnginx-mod-http-kafka | grep -E '^(Status|Depends):'\n\
         /usr/sbin/nginx -t\n\
         exec /usr/sbin/nginx -g 'daemon off;'\n"
    );
    let volume = format!("{}:/debs:ro", repo().join("build/deb").display());
    let c = Container(podman_ok(&[
        "run",
        "-d",
        "--network",
        "host",
        "-v",
        &volume,
        "docker.io/library/debian:bookworm-slim",
        "sh",
        "-c",
        &script,
    ]));
    // apt-get from Debian's archive: a minute or two.
    let deadline = Instant::now() + Duration::from_secs(300);
    while status(port, "/putmessage").is_none() {
        let state = podman_ok(&["inspect", &c.0, "--format", "{{.State.Running}}"]);
        assert_eq!(state, "true", "the container stopped:\n{}", c.logs());
        assert!(
            Instant::now() < deadline,
            "nginx never listened:\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs = c.logs();
    assert!(
        logs.contains(
            "50-mod-http-kafka.conf -> /usr/share/nginx/modules-available/mod-http-kafka.conf"
        ),
        "{logs}"
    );
    assert!(logs.contains("Status: install ok installed"), "{logs}");
    assert!(logs.contains("Depends: nginx-abi-"), "{logs}");
    assert!(logs.contains("test is successful"), "{logs}");

    let sent = post_events(port, "deb", 20);
    let got: Vec<Vec<u8>> = consume(&brokers, "my-poc-topic-01", 21, Duration::from_secs(5))
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(got, sent);
    let version = podman_ok(&["exec", &c.0, "/usr/sbin/nginx", "-v"]);
    println!("{version}");
}
