//! Where the province's forms, admin units and indicators come from.
//!
//! The files under `schemas/forms`, `schemas/admin-units` and `schemas/indicators` are built
//! into the binary, so `mam serve` needs nothing beside it. A folder set in the settings
//! (`forms.dir`, `forms.units_dir`, `forms.indicators_dir`, or `--forms-dir`) replaces the
//! built-in copy of that kind, whole.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

include!(concat!(env!("OUT_DIR"), "/built_in_schemas.rs"));

/// One kind of schema file (`forms`, `admin-units` or `indicators`) and where it is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    folder: &'static str,
    /// The folder given in the settings; `None`: the copy built into the binary, the files of
    /// `schemas/<folder>` when it was compiled.
    dir: Option<PathBuf>,
}

impl Source {
    /// The folder set in the settings, or else the built-in copy of `schemas/<folder>`. An
    /// empty path counts as unset, so `MAM__FORMS__DIR=` goes back to the built-in copy.
    pub fn new(folder: &'static str, configured: Option<&Path>) -> Source {
        let dir = configured
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf);
        Source { folder, dir }
    }

    /// The built-in copy of `schemas/<folder>`.
    pub fn built_in(folder: &'static str) -> Source {
        Source { folder, dir: None }
    }

    /// The configured folder, if one replaces the built-in copy.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The text of the file `name` of this source.
    pub fn read(&self, name: &str) -> anyhow::Result<String> {
        match &self.dir {
            None => {
                let path = format!("{}/{name}", self.folder);
                BUILT_IN
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, text)| (*text).to_owned())
                    .with_context(|| format!("the built-in schemas have no {path}"))
            }
            Some(dir) => {
                let path = dir.join(name);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))
            }
        }
    }

    /// Every `*.json` file of this source in name order, as (its name in messages, its text).
    pub fn json_files(&self) -> anyhow::Result<Vec<(String, String)>> {
        match &self.dir {
            None => Ok(BUILT_IN
                .iter()
                .filter_map(|(path, text)| {
                    let name = path.strip_prefix(self.folder)?.strip_prefix('/')?;
                    name.ends_with(".json")
                        .then(|| (format!("built-in {path}"), (*text).to_owned()))
                })
                .collect()),
            Some(dir) => {
                let entries = std::fs::read_dir(dir).with_context(|| {
                    format!("cannot read {} directory {}", self.folder, dir.display())
                })?;
                let mut paths: Vec<_> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect();
                paths.sort();
                paths
                    .into_iter()
                    .map(|path| {
                        let text = std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?;
                        Ok((path.display().to_string(), text))
                    })
                    .collect()
            }
        }
    }
}

impl fmt::Display for Source {
    /// `built-in` or the folder's path: what `mam serve` logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dir {
            None => f.write_str("built-in"),
            Some(dir) => write!(f, "{}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository(folder: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas")
            .join(folder)
    }

    #[test]
    fn the_built_in_copy_is_the_repository_folder() {
        for folder in ["forms", "indicators"] {
            let built_in = Source::built_in(folder).json_files().unwrap();
            let on_disk = Source::new(folder, Some(&repository(folder)))
                .json_files()
                .unwrap();
            assert!(!built_in.is_empty(), "{folder}");
            assert_eq!(
                built_in.iter().map(|(_, t)| t).collect::<Vec<_>>(),
                on_disk.iter().map(|(_, t)| t).collect::<Vec<_>>(),
                "{folder}"
            );
        }
        let units = Source::built_in("admin-units");
        assert_eq!(
            units.read("versions.json").unwrap(),
            std::fs::read_to_string(repository("admin-units").join("versions.json")).unwrap()
        );
        assert!(
            units.read("README.md").is_err(),
            "only data files are built in"
        );
    }

    #[test]
    fn a_configured_folder_wins() {
        assert_eq!(Source::new("forms", None), Source::built_in("forms"));
        assert_eq!(
            Source::new("forms", Some(Path::new(""))),
            Source::built_in("forms")
        );
        let configured = Source::new("forms", Some(Path::new("/srv/forms")));
        assert_eq!(configured.dir(), Some(Path::new("/srv/forms")));
        assert_eq!(configured.to_string(), "/srv/forms");
        assert_eq!(Source::built_in("forms").to_string(), "built-in");
        let missing = Source::new("admin-units", Some(Path::new("/nonexistent/admin-units")));
        let error = missing.read("versions.json").unwrap_err().to_string();
        assert_eq!(error, "cannot read /nonexistent/admin-units/versions.json");
    }
}
