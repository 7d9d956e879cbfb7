//! A small `--flag VALUE` parser for the subcommands: every flag takes one value, and an
//! unknown flag, a missing value or a repeated flag is an error naming it.

use std::collections::HashMap;
use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;

/// What is wrong with a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError(pub String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlagError {}

/// Whether the user asks for a command's usage (`--help` or `-h` anywhere in its arguments).
pub fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// The options of `ilp-lightning <command>`, read by `parse`. `Err` holds the exit code when
/// there is nothing to run: after printing `usage` when help was asked for (success), or the
/// parse error with a pointer to `--help` (bad input).
pub fn command_options<T>(
    command: &str,
    args: &[String],
    usage: impl FnOnce() -> String,
    parse: impl FnOnce(&[String]) -> Result<T, FlagError>,
) -> Result<T, ExitCode> {
    if wants_help(args) {
        println!("{}", usage());
        return Err(ExitCode::SUCCESS);
    }
    parse(args).map_err(|e| {
        eprintln!("ilp-lightning {command}: {e} (see ilp-lightning {command} --help)");
        ExitCode::from(crate::EXIT_BAD_INPUT)
    })
}

/// Parsed `--name value` pairs.
#[derive(Debug)]
pub struct Flags {
    values: HashMap<String, String>,
}

impl Flags {
    /// Parses `args`, accepting only the flags in `known` (names without the dashes).
    pub fn parse(args: &[String], known: &[&str]) -> Result<Flags, FlagError> {
        let (flags, rest) = Flags::parse_until_command(args, known)?;
        match rest.first() {
            None => Ok(flags),
            Some(stray) => Err(FlagError(format!("unexpected argument {stray:?}"))),
        }
    }

    /// Parses the flags in front of a command word (`client --server U send ...`): stops at the
    /// first argument that is not a flag and returns it with everything after it.
    pub fn parse_until_command<'a>(
        args: &'a [String],
        known: &[&str],
    ) -> Result<(Flags, &'a [String]), FlagError> {
        let mut values = HashMap::new();
        let mut at = 0;
        while let Some(arg) = args.get(at) {
            let Some(name) = arg.strip_prefix("--") else {
                break;
            };
            at += 1;
            // `--name=value` is accepted too.
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (name, None),
            };
            if !known.contains(&name) {
                return Err(FlagError(format!("unknown option --{name}")));
            }
            let value = match inline {
                Some(v) => v,
                None => match args.get(at) {
                    Some(v) if !v.starts_with("--") => {
                        at += 1;
                        v.clone()
                    }
                    _ => return Err(FlagError(format!("--{name} needs a value"))),
                },
            };
            if values.insert(name.to_owned(), value).is_some() {
                return Err(FlagError(format!("--{name} given twice")));
            }
        }
        Ok((Flags { values }, &args[at..]))
    }

    /// The raw value of `--name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `--name`, which must be given.
    pub fn required(&self, name: &str) -> Result<&str, FlagError> {
        self.get(name)
            .ok_or_else(|| FlagError(format!("--{name} is required")))
    }

    /// `--name` parsed as `T`, or `None` when absent.
    pub fn parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>, FlagError>
    where
        T::Err: fmt::Display,
    {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|e| FlagError(format!("--{name} {v:?}: {e}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_known_flags_and_refuses_the_rest() {
        let f = Flags::parse(&args(&["--a", "1", "--b=x"]), &["a", "b"]).unwrap();
        assert_eq!(f.parsed::<u32>("a").unwrap(), Some(1));
        assert_eq!(f.get("b"), Some("x"));
        assert_eq!(f.parsed::<u32>("c").unwrap(), None);
        assert!(f.required("c").unwrap_err().0.contains("--c is required"));
        assert!(Flags::parse(&args(&["--z", "1"]), &["a"]).is_err());
        assert!(Flags::parse(&args(&["--a"]), &["a"])
            .unwrap_err()
            .0
            .contains("needs a value"));
        assert!(Flags::parse(&args(&["--a", "1", "--a", "2"]), &["a"]).is_err());
        assert!(Flags::parse(&args(&["stray"]), &["a"]).is_err());
        assert!(Flags::parse(&args(&["--a", "--b", "1"]), &["a", "b"])
            .unwrap_err()
            .0
            .contains("--a needs a value"));
        let bad = Flags::parse(&args(&["--a", "x"]), &["a"]).unwrap();
        assert!(bad
            .parsed::<u32>("a")
            .unwrap_err()
            .0
            .starts_with("--a \"x\""));
    }
}

#[cfg(test)]
mod command_tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_stop_at_the_command_word() {
        let all = args(&["--a", "1", "send", "--to", "x"]);
        let (flags, rest) = Flags::parse_until_command(&all, &["a"]).unwrap();
        assert_eq!(flags.get("a"), Some("1"));
        assert_eq!(rest, &all[2..]);
        let (_, rest) = Flags::parse_until_command(&all[..2], &["a"]).unwrap();
        assert!(rest.is_empty());
        assert!(wants_help(&args(&["--a", "1", "-h"])));
        assert!(!wants_help(&args(&["--a", "1"])));
    }
}
