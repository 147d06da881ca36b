//! The systemd units in `server/deploy/` run commands this `mam` takes: each unit's command
//! line, with its paths moved into a scratch folder, is run for real (`serve` asked for its
//! help with every flag given; the nightly backup makes its snapshot).

use crate::harness::{mam, repo_root};

/// The `mam` arguments of a unit's `ExecStart`, paths moved under `dir`.
fn command_of(unit: &str, dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("server/deploy").join(unit)).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
    let (_, args) = line
        .split_once("/usr/local/bin/mam ")
        .unwrap_or_else(|| panic!("{unit} runs /usr/local/bin/mam"));
    let d = dir.display().to_string();
    let args = args
        .trim_end_matches('\'')
        .replace("/etc/mam/mam.toml", &format!("{d}/mam.toml"))
        .replace("/var/lib/mam-backups", &format!("{d}/backups"))
        .replace("/var/lib/mam", &format!("{d}/data"))
        .replace("$(date +%%Y-%%m-%%d-%%H%%M)", "nightly")
        .replace('"', "");
    args.split_whitespace().map(str::to_owned).collect()
}

pub fn systemd_units_run_real_commands() {
    let dir = std::env::temp_dir().join(format!("mam-deploy-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("backups")).unwrap();
    std::fs::write(dir.join("mam.toml"), "").unwrap();

    let serve = command_of("mam.service", &dir);
    assert_eq!(serve[0], "serve");
    let out = mam().args(&serve).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "mam {serve:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A database to back up, made as the service would make it.
    let list = mam()
        .args(["device", "list", "--config"])
        .arg(dir.join("mam.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let backup = command_of("mam-backup.service", &dir);
    assert_eq!(backup[0], "backup");
    let out = mam().args(&backup).output().unwrap();
    assert!(
        out.status.success(),
        "mam {backup:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.join("backups/mam-nightly.db").is_file(),
        "the snapshot is made"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
