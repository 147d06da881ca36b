//! Builds the province's schemas into the binary: every data file under `schemas/forms`,
//! `schemas/admin-units` and `schemas/indicators` becomes an entry of a generated table of
//! (path under `schemas/`, text), read by `src/schemas.rs`. A folder set in the settings still
//! replaces the built-in copy at run time.

use std::fmt::Write as _;
use std::path::Path;

/// The folders of `schemas/` the server reads, and the kinds of file it reads from them.
const FOLDERS: [&str; 3] = ["forms", "admin-units", "indicators"];
const EXTENSIONS: [&str; 2] = ["json", "csv"];

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let schemas = Path::new(&manifest).join("../schemas");
    println!("cargo:rerun-if-changed=build.rs");
    let mut files = Vec::new();
    for folder in FOLDERS {
        let dir = schemas.join(folder);
        println!("cargo:rerun-if-changed={}", dir.display());
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let wanted = path
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| EXTENSIONS.contains(&x));
            if path.is_file() && wanted {
                let name = path
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap_or_else(|| panic!("{}: file names must be UTF-8", path.display()));
                let absolute = path.canonicalize().expect("an existing file");
                files.push((format!("{folder}/{name}"), absolute));
            }
        }
    }
    files.sort();
    let mut out = String::from(
        "/// The files of `schemas/` built into the binary: (path under `schemas/`, text), in\n\
         /// path order.\n\
         pub static BUILT_IN: &[(&str, &str)] = &[\n",
    );
    for (name, path) in &files {
        let path = path.to_str().expect("a UTF-8 path");
        writeln!(out, "    ({name:?}, include_str!({path:?})),").unwrap();
    }
    out.push_str("];\n");
    let target = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("built_in_schemas.rs");
    std::fs::write(&target, out).expect("write the built-in schemas table");
}
