//! Writes the site registry of `kafka_sites` (docs/sites.md): registers a site, rotates and
//! retires its keys, replaces its stats secret, lists and checks the file.
//! `kafka-sites --help` says how.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

// The registry's own code, compiled in from its file, so that the tool applies exactly the
// rules nginx applies (linking the module's library would need nginx's symbols).
#[allow(dead_code)]
#[path = "../sites/registry.rs"]
mod registry;

use registry::{secret_hash, Registry, Site};

const USAGE: &str = "\
usage: kafka-sites add    --file F --domain D [--domain D ...] [--topic T] [--id ID]
                          [--rate N] [--key-field NAME] [--collector URL]
       kafka-sites rotate --file F --site ID [--collector URL]
       kafka-sites retire --file F --site ID --key KEY
       kafka-sites secret --file F --site ID
       kafka-sites list   --file F
       kafka-sites check  --file F

The registry of kafka_sites (docs/sites.md). add prints the new key on its first line,
the script tag on the second and the stats secret on the third; rotate prints the new
key and its tag; secret prints the new stats secret. --collector is the URL the SDK is
served from (default: $KAFKA_COLLECTOR, else http://collect.localhost:8080, the example
server). Every change is checked as nginx checks it, then written atomically; run
`nginx -s reload` for nginx to read it.
";

/// A failure: the message, and whether it was the command line's fault (exit 2) or not (1).
struct Failure(String, u8);

fn usage(msg: impl Into<String>) -> Failure {
    Failure(msg.into(), 2)
}

fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into(), 1)
}

#[derive(Default)]
struct Args {
    file: Option<PathBuf>,
    domains: Vec<String>,
    topic: Option<String>,
    id: Option<String>,
    site: Option<String>,
    key: Option<String>,
    rate: Option<u32>,
    key_field: Option<String>,
    collector: Option<String>,
}

fn parse(command: &str, rest: &[String]) -> Result<Args, Failure> {
    let allowed: &[&str] = match command {
        "add" => &[
            "--file",
            "--domain",
            "--topic",
            "--id",
            "--rate",
            "--key-field",
            "--collector",
        ],
        "rotate" => &["--file", "--site", "--collector"],
        "retire" => &["--file", "--site", "--key"],
        "secret" => &["--file", "--site"],
        "list" | "check" => &["--file"],
        _ => return Err(usage(format!("unknown command \"{command}\""))),
    };
    let mut args = Args::default();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (flag.as_str(), None),
        };
        if !allowed.contains(&flag) {
            return Err(usage(format!("{command}: unknown option \"{flag}\"")));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| usage(format!("{command}: {flag} needs a value")))?,
        };
        let once = |slot: &mut Option<String>| {
            if slot.replace(value.clone()).is_some() {
                Err(usage(format!("{command}: {flag} is given twice")))
            } else {
                Ok(())
            }
        };
        match flag {
            "--file" => {
                if args.file.replace(PathBuf::from(&value)).is_some() {
                    return Err(usage(format!("{command}: --file is given twice")));
                }
            }
            "--domain" => args.domains.push(value.to_ascii_lowercase()),
            "--topic" => once(&mut args.topic)?,
            "--id" => once(&mut args.id)?,
            "--site" => once(&mut args.site)?,
            "--key" => once(&mut args.key)?,
            "--key-field" => once(&mut args.key_field)?,
            "--collector" => once(&mut args.collector)?,
            "--rate" => {
                let rate = value.parse().ok().filter(|&r: &u32| r > 0).ok_or_else(|| {
                    usage(format!("add: --rate \"{value}\" is not a positive number"))
                })?;
                args.rate = Some(rate);
            }
            _ => unreachable!("every allowed option is handled"),
        }
    }
    if args.file.is_none() {
        return Err(usage(format!("{command}: --file is required")));
    }
    let required: &[(&str, bool)] = match command {
        "add" => &[("--domain", !args.domains.is_empty())],
        "rotate" | "secret" => &[("--site", args.site.is_some())],
        "retire" => &[
            ("--site", args.site.is_some()),
            ("--key", args.key.is_some()),
        ],
        _ => &[],
    };
    if let Some((flag, _)) = required.iter().find(|(_, given)| !given) {
        return Err(usage(format!("{command}: {flag} is required")));
    }
    Ok(args)
}

/// `n` bytes from the operating system's random source, as lowercase hex.
fn random_hex(n: usize) -> Result<String, Failure> {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| fail(format!("/dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn new_key() -> Result<String, Failure> {
    random_hex(16)
}

fn load(file: &Path, may_be_missing: bool) -> Result<Registry, Failure> {
    match fs::read_to_string(file) {
        Ok(text) => Registry::parse(&text).map_err(|e| fail(format!("{}: {e}", file.display()))),
        Err(e) if may_be_missing && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Registry::empty())
        }
        Err(e) => Err(fail(format!("{}: cannot be read: {e}", file.display()))),
    }
}

/// Checks `sites` as nginx would, then writes them over `file` atomically: a temporary file
/// in the same directory, synced, renamed over it. A new file is mode 0640; an existing
/// one keeps its mode.
fn save(file: &Path, sites: Vec<Site>) -> Result<(), Failure> {
    let registry = Registry::from_sites(sites).map_err(fail)?;
    let mode = fs::metadata(file)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o640);
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| usage(format!("{}: not a file name", file.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(registry.to_json().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, file)?;
        fs::File::open(&dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(format!("{}: cannot be written: {e}", file.display()))
    })
}

fn script_tag(collector: &str, key: &str) -> String {
    format!(
        "<script async src=\"{}/kc.js?key={key}\"></script>",
        collector.trim_end_matches('/')
    )
}

fn collector(args: &Args) -> String {
    args.collector
        .clone()
        .or_else(|| {
            std::env::var("KAFKA_COLLECTOR")
                .ok()
                .filter(|c| !c.is_empty())
        })
        .unwrap_or_else(|| "http://collect.localhost:8080".to_string())
}

/// A site id from a domain: `*.shop.example` → `shop-example`; anything an id cannot hold
/// becomes `-` (the domain's own rules are checked with the rest of the site).
fn id_from_domain(domain: &str) -> String {
    let id: String = domain
        .trim_start_matches("*.")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            _ => '-',
        })
        .collect();
    let id: String = id.trim_matches('-').chars().take(64).collect();
    if id.is_empty() {
        "site".to_string()
    } else {
        id
    }
}

fn site_index(registry: &Registry, id: &str, file: &Path) -> Result<usize, Failure> {
    registry
        .by_id(id)
        .map(|(i, _)| i)
        .ok_or_else(|| fail(format!("{}: no site \"{id}\"", file.display())))
}

fn run(argv: &[String]) -> Result<String, Failure> {
    let Some(command) = argv.first() else {
        return Err(usage("a command is required"));
    };
    if command == "--help" || command == "-h" || command == "help" {
        return Ok(USAGE.to_string());
    }
    let args = parse(command, &argv[1..])?;
    let file = args.file.clone().unwrap_or_default();
    match command.as_str() {
        "add" => {
            let registry = load(&file, true)?;
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| id_from_domain(&args.domains[0]));
            if registry.by_id(&id).is_some() {
                return Err(fail(format!(
                    "{}: site \"{id}\" exists (rotate its key, or add with another --id)",
                    file.display()
                )));
            }
            let key = new_key()?;
            let secret = random_hex(24)?;
            let mut sites = registry.sites.clone();
            sites.push(Site {
                id: id.clone(),
                keys: vec![key.clone()],
                domains: args.domains.clone(),
                topic: args.topic.clone(),
                key_field: args.key_field.clone(),
                rate: args.rate,
                stats_secret_sha256: Some(secret_hash(secret.as_bytes())),
            });
            save(&file, sites)?;
            eprintln!(
                "kafka-sites: site \"{id}\" added to {}; nginx -s reload to serve it",
                file.display()
            );
            Ok(format!(
                "{key}\n{}\nstats secret: {secret}\n",
                script_tag(&collector(&args), &key)
            ))
        }
        "rotate" => {
            let registry = load(&file, false)?;
            let id = args.site.clone().unwrap_or_default();
            let i = site_index(&registry, &id, &file)?;
            let key = new_key()?;
            let mut sites = registry.sites.clone();
            sites[i].keys.push(key.clone());
            save(&file, sites)?;
            eprintln!(
                "kafka-sites: site \"{id}\" has a new key; its other keys stay valid until retired"
            );
            Ok(format!("{key}\n{}\n", script_tag(&collector(&args), &key)))
        }
        "retire" => {
            let registry = load(&file, false)?;
            let id = args.site.clone().unwrap_or_default();
            let key = args.key.clone().unwrap_or_default();
            let i = site_index(&registry, &id, &file)?;
            let mut sites = registry.sites.clone();
            let keys = &mut sites[i].keys;
            let Some(k) = keys.iter().position(|k| *k == key) else {
                return Err(fail(format!("site \"{id}\" has no key \"{key}\"")));
            };
            if keys.len() == 1 {
                return Err(fail(format!(
                    "\"{key}\" is site \"{id}\"'s only key: rotate first"
                )));
            }
            keys.remove(k);
            save(&file, sites)?;
            eprintln!("kafka-sites: key {key} of site \"{id}\" retired");
            Ok(String::new())
        }
        "secret" => {
            let registry = load(&file, false)?;
            let id = args.site.clone().unwrap_or_default();
            let i = site_index(&registry, &id, &file)?;
            let secret = random_hex(24)?;
            let mut sites = registry.sites.clone();
            sites[i].stats_secret_sha256 = Some(secret_hash(secret.as_bytes()));
            save(&file, sites)?;
            eprintln!("kafka-sites: site \"{id}\" has a new stats secret; the old one no longer opens its stats");
            Ok(format!("{secret}\n"))
        }
        "list" => {
            let registry = load(&file, false)?;
            Ok(registry
                .sites
                .iter()
                .map(|s| {
                    format!(
                        "{} keys={} domains={} topic={}\n",
                        s.id,
                        s.keys.join(","),
                        s.domains.join(","),
                        s.topic.as_deref().unwrap_or("-")
                    )
                })
                .collect())
        }
        "check" => {
            let registry = load(&file, false)?;
            Ok(format!(
                "{}: {} site(s), valid\n",
                file.display(),
                registry.sites.len()
            ))
        }
        _ => unreachable!("parse refuses unknown commands"),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(Failure(msg, code)) => {
            eprintln!("kafka-sites: {msg}");
            if code == 2 {
                eprint!("{USAGE}");
            }
            ExitCode::from(code)
        }
    }
}
