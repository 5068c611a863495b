//! `warren env build|list`: the environments (root filesystems) a worker offers, built into and
//! listed from its environments directory.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use warren_worker::env_build::{self, BuildRequest, Debian, Recipe};
use warren_worker::environments::{self, Environment};

use super::client_args::print_json;
use super::render::{human_size, table};
use super::server::default_data_dir;

/// `warren env ...`
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Build an environment into the environments directory.
    #[command(subcommand)]
    Build(BuildCommand),
    /// List the environments a worker with this environments directory offers, with sizes.
    List(ListArgs),
}

/// `warren env build ...`
#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// A minimal environment: Debian's static busybox (installed through apt when missing) with
    /// its applets, so `#!/bin/sh` scripts run.
    Busybox(BusyboxArgs),
    /// A minimal Debian system (debootstrap's minbase variant) with the packages given.
    Debian(DebianArgs),
}

/// The environments directory flag.
#[derive(Debug, Args)]
pub struct EnvDirArg {
    /// The environments directory [default: DATA_DIR/environments, which `warren worker` and
    /// `warren up` also use by default].
    #[arg(long, value_name = "DIR")]
    pub env_dir: Option<PathBuf>,
}

impl EnvDirArg {
    fn dir(&self) -> PathBuf {
        self.env_dir.clone().unwrap_or_else(default_env_dir)
    }
}

/// The default environments directory: `DATA_DIR/environments`.
pub fn default_env_dir() -> PathBuf {
    default_data_dir().join("environments")
}

/// Flags every builder takes.
#[derive(Debug, Args)]
pub struct BuildCommon {
    /// The environment's name (what tasks give as `environment`).
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub env_dir: EnvDirArg,
    /// Pack it into a squashfs image `DIR/NAME.sfs` instead of leaving a directory `DIR/NAME`.
    #[arg(long)]
    pub squashfs: bool,
    /// Replace an environment of the same name.
    #[arg(long)]
    pub force: bool,
}

/// `warren env build busybox`
#[derive(Debug, Args)]
pub struct BusyboxArgs {
    #[command(flatten)]
    pub common: BuildCommon,
}

/// `warren env build debian`
#[derive(Debug, Args)]
pub struct DebianArgs {
    #[command(flatten)]
    pub common: BuildCommon,
    /// Packages to add, comma-separated (repeatable).
    #[arg(long, value_name = "PKG,...", value_delimiter = ',')]
    pub packages: Vec<String>,
    /// The Debian release [default: the host's, when it is Debian; else `stable`].
    #[arg(long, value_name = "SUITE")]
    pub suite: Option<String>,
    /// The Debian archive to install from [default: debootstrap's].
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
}

/// `warren env list`
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub env_dir: EnvDirArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `warren env list --json` prints.
#[derive(Debug, serde::Serialize)]
struct Listing {
    env_dir: PathBuf,
    environments: Vec<Environment>,
}

/// Runs `warren env ...`.
pub fn run(command: EnvCommand) -> anyhow::Result<u8> {
    match command {
        EnvCommand::Build(BuildCommand::Busybox(args)) => build(args.common, Recipe::Busybox),
        EnvCommand::Build(BuildCommand::Debian(args)) => {
            let suite = args.suite.unwrap_or_else(|| {
                let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
                env_build::default_suite(&os_release)
            });
            let packages = args
                .packages
                .into_iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            let recipe = Recipe::Debian(Debian {
                suite,
                mirror: args.mirror,
                packages,
            });
            build(args.common, recipe)
        }
        EnvCommand::List(args) => list(args),
    }
}

fn build(common: BuildCommon, recipe: Recipe) -> anyhow::Result<u8> {
    let request = BuildRequest {
        env_dir: common.env_dir.dir(),
        name: common.name,
        recipe,
        squashfs: common.squashfs,
        force: common.force,
    };
    let mut progress = |line: &str| eprintln!("warren: {line}");
    let built = env_build::build(&request, &mut progress)
        .with_context(|| format!("building environment `{}`", request.name))?;
    println!(
        "built environment {} ({}, {}) at {}",
        built.name,
        built.kind,
        human_size(built.size_bytes.unwrap_or(0)),
        built.path.display()
    );
    Ok(0)
}

fn list(args: ListArgs) -> anyhow::Result<u8> {
    let dir = args.env_dir.dir();
    // The default directory, not made yet, holds nothing: only `host` is offered.
    let environments = if args.env_dir.env_dir.is_none() && !dir.exists() {
        environments::list(None)?
    } else {
        environments::list(Some(&dir)).context("listing environments")?
    };
    if args.json {
        print_json(&Listing {
            env_dir: dir,
            environments,
        })?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = environments
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.kind.to_string(),
                e.size_bytes.map_or_else(|| "-".to_string(), human_size),
                e.path.display().to_string(),
            ]
        })
        .collect();
    print!("{}", table(&["NAME", "KIND", "SIZE", "PATH"], &rows));
    Ok(0)
}
