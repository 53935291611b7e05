//! Preflight of a python-home (or a mount's venv) before the interpreter starts: pure
//! file-system work, one clear message per problem. CPython itself would start *silently*
//! with the wrong packages for a missing or wrong-version venv, or die with "No module named
//! encodings" for some others.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The Python major.minor this gateway embeds (fixed at build time).
pub const EMBEDDED_VERSION: &str = env!("WSGI_GATEWAY_PY_VERSION");
/// The prefix of the Python the gateway was built against.
pub const BUILD_PREFIX: &str = env!("WSGI_GATEWAY_PY_PREFIX");

/// A checked python-home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// A virtualenv root (holds `pyvenv.cfg`).
    Venv(PathBuf),
    /// A base installation prefix (holds `lib/pythonX.Y/os.py`).
    Prefix(PathBuf),
}

impl Home {
    /// `PyConfig.program_name` for this home: getpath finds everything from it.
    pub fn program_name(&self) -> PathBuf {
        match self {
            Home::Venv(root) => root.join("bin/python"),
            Home::Prefix(root) => root.join(format!("bin/python{EMBEDDED_VERSION}")),
        }
    }

    /// `PyConfig.home`: only for a base installation (a venv has no stdlib of its own).
    pub fn home(&self) -> Option<&Path> {
        match self {
            Home::Venv(_) => None,
            Home::Prefix(root) => Some(root),
        }
    }

    /// The installation the gateway was built against.
    pub fn build_default() -> Home {
        Home::Prefix(PathBuf::from(BUILD_PREFIX))
    }
}

fn lib_dir(root: &Path) -> PathBuf {
    root.join(format!("lib/python{EMBEDDED_VERSION}"))
}

/// Reads `version` (python -m venv, virtualenv) or `version_info` (uv) from pyvenv.cfg and
/// returns its major.minor.
pub fn pyvenv_version(cfg_text: &str) -> Option<String> {
    let mut version = None;
    let mut version_info = None;
    for line in cfg_text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "version" => version = Some(value.trim().to_string()),
            "version_info" => version_info = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let full = version.or(version_info)?;
    let mut parts = full.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    (major.chars().all(|c| c.is_ascii_digit()) && minor.chars().all(|c| c.is_ascii_digit()))
        .then(|| format!("{major}.{minor}"))
}

/// Checks a python-home (`what` names the setting in messages, e.g. "python-home").
pub fn check(what: &str, path: &Path) -> Result<Home, String> {
    let shown = path.display();
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(format!("{what} {shown} does not exist"))
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Err(format!("{what} {shown} is not readable by this user: {e}"))
        }
        Err(e) => return Err(format!("{what} {shown}: {e}")),
    };
    if !meta.is_dir() {
        let is_python = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("python"));
        if is_python {
            let root = path
                .parent()
                .filter(|b| b.file_name().is_some_and(|n| n == "bin"))
                .and_then(Path::parent)
                .filter(|r| r.join("pyvenv.cfg").is_file());
            let hint = match root {
                Some(r) => format!("use {}", r.display()),
                None => "use the virtualenv root (the directory holding pyvenv.cfg)".into(),
            };
            return Err(format!(
                "{what} {shown} is the interpreter, not the virtualenv root; {hint}"
            ));
        }
        return Err(format!("{what} {shown} is not a directory"));
    }
    let cfg = path.join("pyvenv.cfg");
    match fs::read_to_string(&cfg) {
        Ok(text) => {
            let Some(version) = pyvenv_version(&text) else {
                return Err(format!(
                    "{what} {shown}: {} names no Python version (neither 'version' nor 'version_info')",
                    cfg.display()
                ));
            };
            if version != EMBEDDED_VERSION {
                return Err(format!(
                    "{what} {shown} was created by Python {version} but this gateway embeds Python \
                     {EMBEDDED_VERSION}; recreate it with python{EMBEDDED_VERSION} -m venv {shown}"
                ));
            }
            let site = lib_dir(path).join("site-packages");
            match fs::read_dir(&site) {
                Ok(_) => Ok(Home::Venv(path.to_path_buf())),
                Err(e) if e.kind() == ErrorKind::NotFound => Err(format!(
                    "{what} {shown} has no {} (an incomplete virtualenv?)",
                    site.display()
                )),
                Err(e) => Err(format!(
                    "{what} {shown}: {} is not readable by this user: {e}",
                    site.display()
                )),
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let lib = lib_dir(path);
            // A directory inside a venv (its bin/, lib/...), or an installation's bin/.
            let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            let venv_root = abs
                .ancestors()
                .skip(1)
                .find(|a| a.join("pyvenv.cfg").is_file());
            let install_root = abs
                .parent()
                .filter(|p| abs.ends_with("bin") && lib_dir(p).join("os.py").is_file());
            if let Some(root) = venv_root {
                let part = if abs.parent() == Some(root) && abs.ends_with("bin") {
                    "the virtualenv's bin directory".to_string()
                } else {
                    format!("inside the virtualenv {}", root.display())
                };
                Err(format!(
                    "{what} {shown} is {part}, not its root; use {}",
                    root.display()
                ))
            } else if lib.join("os.py").is_file() && lib.join("encodings").is_dir() {
                Ok(Home::Prefix(path.to_path_buf()))
            } else if let Some(prefix) = install_root {
                Err(format!(
                    "{what} {shown} is the bin directory of a Python installation, not its \
                     prefix; use {}",
                    prefix.display()
                ))
            } else {
                Err(format!(
                    "{what} {shown} is neither a virtualenv (no pyvenv.cfg) nor a Python \
                     {EMBEDDED_VERSION} installation (no {}/os.py)",
                    lib.display()
                ))
            }
        }
        Err(e) => Err(format!(
            "{what} {shown}: {} is not readable by this user: {e}",
            cfg.display()
        )),
    }
}

/// The virtualenv the running gateway is installed in (`pip install` puts it into
/// `<venv>/bin/`): the parent of the executable's directory, when that holds a `pyvenv.cfg`.
/// It is the default python-home, so the app sees the packages installed beside the gateway.
pub fn installed_in() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    let root = bin.parent()?;
    (bin.file_name()? == "bin" && root.join("pyvenv.cfg").is_file()).then(|| root.to_path_buf())
}

/// The installation whose standard library the interpreter runs with: the one a venv was made
/// from (`home` in its pyvenv.cfg names that installation's `bin`), or the prefix itself.
pub fn base_prefix(home: &Home) -> PathBuf {
    match home {
        Home::Prefix(p) => p.clone(),
        Home::Venv(root) => fs::read_to_string(root.join("pyvenv.cfg"))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == "home").then(|| PathBuf::from(v.trim()))
                })
            })
            .and_then(|bin| bin.parent().map(Path::to_path_buf))
            .filter(|p| lib_dir(p).is_dir())
            .unwrap_or_else(|| PathBuf::from(BUILD_PREFIX)),
    }
}

/// The standard library the interpreter will run with must be readable by this user:
/// otherwise CPython stops with a raw "Python path configuration" dump.
pub fn check_base(home: &Home) -> Result<(), String> {
    let prefix = base_prefix(home);
    let lib = lib_dir(&prefix);
    let readable = fs::File::open(lib.join("os.py"))
        .and_then(|_| fs::read_dir(lib.join("encodings")))
        .map(drop);
    readable.map_err(|e| {
        format!(
            "the embedded Python's standard library {} is not readable by this user ({e}); \
             make {} readable by this user (with every directory above it searchable, e.g. not \
             under a private home), or build the gateway against a Python this user can read",
            lib.display(),
            prefix.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_of_every_tool() {
        assert_eq!(
            pyvenv_version("home = /x\nversion = 3.12.1\n").as_deref(),
            Some("3.12")
        );
        assert_eq!(
            pyvenv_version("version_info = 3.11.7\n").as_deref(),
            Some("3.11")
        );
        assert_eq!(
            pyvenv_version("version_info = 3.13.0.final.0\nversion = 3.13.0").as_deref(),
            Some("3.13")
        );
        assert_eq!(pyvenv_version("home = /x\n"), None);
    }

    #[test]
    fn refuses_missing_file_and_binary() {
        let dir = std::env::temp_dir().join(format!("gw-venv-test-{}", std::process::id()));
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(dir.join("pyvenv.cfg"), "version = 2.7.18\n").unwrap();
        fs::write(bin.join("python"), "").unwrap();
        let err = check("python-home", &bin.join("python")).unwrap_err();
        assert!(err.contains("is the interpreter"), "{err}");
        assert!(err.contains(&format!("use {}", dir.display())), "{err}");
        let err = check("python-home", &dir).unwrap_err();
        assert!(err.contains("created by Python 2.7"), "{err}");
        let err = check("python-home", &bin).unwrap_err();
        assert!(
            err.contains(&format!(
                "bin directory, not its root; use {}",
                dir.display()
            )),
            "{err}"
        );
        let site = lib_dir(&dir).join("site-packages");
        fs::create_dir_all(&site).unwrap();
        let err = check("python-home", &site).unwrap_err();
        assert!(
            err.ends_with(&format!(
                "is inside the virtualenv {0}, not its root; use {0}",
                dir.display()
            )),
            "{err}"
        );
        fs::remove_dir_all(dir.join("lib")).unwrap();
        let err = check("python-home", &dir.join("nope")).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        fs::write(
            dir.join("pyvenv.cfg"),
            format!("version = {EMBEDDED_VERSION}.0\n"),
        )
        .unwrap();
        let err = check("python-home", &dir).unwrap_err();
        assert!(err.contains("site-packages"), "{err}");
        fs::create_dir_all(lib_dir(&dir).join("site-packages")).unwrap();
        assert_eq!(check("python-home", &dir), Ok(Home::Venv(dir.clone())));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_base_of_a_venv_is_its_home_installation() {
        let dir = std::env::temp_dir().join(format!("gw-venv-base-{}", std::process::id()));
        let base = dir.join("base");
        fs::create_dir_all(lib_dir(&base)).unwrap();
        let venv = dir.join("venv");
        fs::create_dir_all(&venv).unwrap();
        let cfg = |home: &Path| {
            format!(
                "home = {}\nversion = {EMBEDDED_VERSION}.1\n",
                home.display()
            )
        };
        fs::write(venv.join("pyvenv.cfg"), cfg(&base.join("bin"))).unwrap();
        assert_eq!(base_prefix(&Home::Venv(venv.clone())), base);
        // A home without a standard library: the build's installation.
        fs::write(venv.join("pyvenv.cfg"), cfg(&dir.join("gone/bin"))).unwrap();
        assert_eq!(
            base_prefix(&Home::Venv(venv.clone())),
            PathBuf::from(BUILD_PREFIX)
        );
        assert_eq!(base_prefix(&Home::Prefix(base.clone())), base);
        assert!(check_base(&Home::Prefix(base.clone())).is_err());
        assert_eq!(check_base(&Home::build_default()), Ok(()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_bin_directory_of_an_installation_names_its_prefix() {
        let bin = Path::new(BUILD_PREFIX).join("bin");
        let err = check("python-home", &bin).unwrap_err();
        assert!(
            err.ends_with(&format!(
                "is the bin directory of a Python installation, not its prefix; use {}",
                fs::canonicalize(BUILD_PREFIX).unwrap().display()
            )),
            "{err}"
        );
    }

    #[test]
    fn build_prefix_is_a_valid_home() {
        assert_eq!(
            check("python-home", Path::new(BUILD_PREFIX)),
            Ok(Home::build_default())
        );
    }
}
