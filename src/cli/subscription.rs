//! `gatehouse subscription create|list|show|regenerate|suspend|resume|cancel|expire`
//! (product.md §1). Keys are printed only by `create` and `regenerate`, and only those the
//! gateway generated; `list` and `show` never print keys. A key can be supplied as `-` to read
//! it from standard input, which keeps it out of the process list and shell history.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use serde::Deserialize;
use serde_json::json;

use crate::config::store::StoreConfig;
use crate::config::{Document, PathSeg};
use crate::store::{KeySlot, NewSubscription, Scope, State, Store, StoreError, Subscription, SubscriptionKey};

#[derive(Debug, Args)]
pub struct SubscriptionArgs {
    /// The gateway's config file (for `store.url`, product and API names).
    #[arg(short, long, global = true, default_value = "gatehouse.yaml")]
    pub config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: SubscriptionCommand,
}

#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Create a subscription and print its keys (shown this once only).
    #[command(group(ArgGroup::new("scope").required(true).args(["product", "api", "all_apis"])))]
    Create {
        /// A name people recognise (unique).
        #[arg(long)]
        name: String,
        /// Scope: every API of this product.
        #[arg(long)]
        product: Option<String>,
        /// Scope: this one API.
        #[arg(long)]
        api: Option<String>,
        /// Scope: every API.
        #[arg(long)]
        all_apis: bool,
        /// Use this primary key instead of generating one (`-` reads it from stdin).
        #[arg(long)]
        primary_key: Option<String>,
        /// Use this secondary key instead of generating one (`-` reads it from stdin).
        #[arg(long)]
        secondary_key: Option<String>,
        /// Expiry: an RFC 3339 time (`2027-01-31T00:00:00Z`) or a duration from now (`90d`).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List subscriptions (without keys).
    List,
    /// Show one subscription by id or name (without keys).
    Show { subscription: String },
    /// Replace one key; the other keeps working (rotation without downtime).
    #[command(group(ArgGroup::new("slot").required(true).args(["primary", "secondary"])))]
    Regenerate {
        subscription: String,
        #[arg(long)]
        primary: bool,
        #[arg(long)]
        secondary: bool,
        /// Use this key instead of generating one (`-` reads it from stdin).
        #[arg(long)]
        key: Option<String>,
    },
    /// Refuse the subscription's keys (403) until it is resumed.
    Suspend { subscription: String },
    /// Make a suspended subscription active again.
    Resume { subscription: String },
    /// Refuse the subscription's keys for good.
    Cancel { subscription: String },
    /// Set (`--at`) or clear (`--never`) the expiry time.
    #[command(group(ArgGroup::new("when").required(true).args(["at", "never"])))]
    Expire {
        subscription: String,
        /// An RFC 3339 time or a duration from now.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        never: bool,
    },
}

/// What the subcommands need from the config file.
struct Settings {
    store: StoreConfig,
    base_dir: PathBuf,
    products: BTreeSet<String>,
    apis: BTreeSet<String>,
}

/// Only the parts of a product this command looks at; policies are `run`'s business.
#[derive(Deserialize)]
#[allow(dead_code)]
struct ProductNames {
    #[serde(default)]
    subscription_required: bool,
    #[serde(default)]
    apis: Vec<String>,
    #[serde(default)]
    policies: serde::de::IgnoredAny,
    description: Option<String>,
}

fn key(k: &str) -> PathSeg {
    PathSeg::Key(k.into())
}

fn read_settings(path: &Path) -> Result<Settings, String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read the config file: {e}"))?;
    let lines = |errors: Vec<crate::config::ConfigError>| errors.iter().map(ToString::to_string).collect::<Vec<_>>();
    let mut doc = Document::parse(&name, &text).map_err(|e| lines(e).join("\n"))?;
    let mut errors = Vec::new();
    crate::secrets::resolve(&mut doc, &mut errors);
    // A secret used elsewhere (say the admin token) need not be set where the CLI runs.
    errors.retain(|e| e.path == "store" || e.path.starts_with("store."));
    let store = match doc.deserialize_at::<StoreConfig>(&[key("store")]) {
        None => StoreConfig::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            errors.extend(e);
            StoreConfig::default()
        }
    };
    let mut products = BTreeSet::new();
    if let Some(found) = doc.deserialize_at::<std::collections::BTreeMap<String, ProductNames>>(&[key("products")]) {
        match found {
            Ok(map) => products.extend(map.into_keys()),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(lines(errors).join("\n"));
    }
    let apis = doc.map_entries(&[key("apis")]).into_iter().map(|(k, _)| k).collect();
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Settings { store, base_dir, products, apis })
}

/// Parses `--expires`: an RFC 3339 time or a duration from now.
pub fn parse_expiry(text: &str, now: i64) -> Result<i64, String> {
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    match crate::config::Duration::parse(text) {
        Ok(d) => Ok(now.saturating_add(i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!("`{text}` is neither an RFC 3339 time (2027-01-31T00:00:00Z) nor a duration (90d)")),
    }
}

fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// A key from the command line, or from stdin for `-`.
fn supplied_key(value: Option<String>, stdin: &mut impl BufRead) -> Result<Option<SubscriptionKey>, String> {
    let Some(v) = value else { return Ok(None) };
    let text = if v == "-" {
        let mut line = String::new();
        stdin.read_line(&mut line).map_err(|e| format!("cannot read a key from stdin: {e}"))?;
        line.trim().to_owned()
    } else {
        v
    };
    SubscriptionKey::parse(&text).map(Some)
}

/// Runs one subcommand; exit codes 0 ok, 1 invalid input, 2 runtime failure.
pub fn run(args: SubscriptionArgs) -> ExitCode {
    let settings = match read_settings(&args.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    match runtime.block_on(execute(args.command, args.json, &settings, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(e)) => {
            eprintln!("gatehouse: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("gatehouse: {e}");
            ExitCode::from(2)
        }
    }
}

enum Failure {
    Input(String),
    Runtime(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        if e.is_input_error() {
            Failure::Input(e.to_string())
        } else {
            Failure::Runtime(e.to_string())
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Runtime(format!("cannot write the output: {e}"))
    }
}

async fn execute(
    command: SubscriptionCommand,
    json: bool,
    settings: &Settings,
    out: &mut impl Write,
) -> Result<(), Failure> {
    use SubscriptionCommand as C;
    let mut stdin = std::io::stdin().lock();
    let input = Failure::Input;
    // Validate the arguments before opening (maybe creating) the store.
    let store = || Store::open(&settings.store, &settings.base_dir);
    match command {
        C::Create { name, product, api, all_apis: _, primary_key, secondary_key, expires } => {
            let scope = match (product, api) {
                (Some(p), _) if !settings.products.contains(&p) => {
                    return Err(input(format!("no product `{p}` in the config's `products`")))
                }
                (Some(p), _) => Scope::Product(p),
                (None, Some(a)) if !settings.apis.contains(&a) => {
                    return Err(input(format!("no API `{a}` in the config's `apis`")))
                }
                (None, Some(a)) => Scope::Api(a),
                (None, None) => Scope::AllApis,
            };
            let expires_at = expires.map(|e| parse_expiry(&e, crate::store::unix_now())).transpose().map_err(input)?;
            let primary_key = supplied_key(primary_key, &mut stdin).map_err(input)?;
            let secondary_key = supplied_key(secondary_key, &mut stdin).map_err(input)?;
            let new = NewSubscription { name, scope, primary_key, secondary_key, expires_at };
            let (sub, keys) = store().await?.create_subscription(new).await?;
            let (p, s) = (keys.primary.as_ref().map(|k| k.expose()), keys.secondary.as_ref().map(|k| k.expose()));
            if json {
                writeln!(out, "{}", json!({ "subscription": sub, "primary_key": p, "secondary_key": s }))?;
            } else {
                writeln!(out, "created {}", describe(&sub))?;
                if let Some(p) = p {
                    writeln!(out, "primary key:   {p}")?;
                }
                if let Some(s) = s {
                    writeln!(out, "secondary key: {s}")?;
                }
                if p.is_some() || s.is_some() {
                    writeln!(out, "Keys are shown only now: store them safely.")?;
                }
            }
        }
        C::List => {
            let list = store().await?.list_subscriptions().await?;
            if json {
                writeln!(out, "{}", json!(list))?;
            } else {
                writeln!(out, "{:<20}  {:<24}  {:<24}  {:<9}  EXPIRES", "ID", "NAME", "SCOPE", "STATE")?;
                for s in &list {
                    let expires = s.expires_at.map_or_else(|| "-".to_owned(), format_time);
                    let (name, scope) = (&s.name, s.scope.to_string());
                    writeln!(out, "{:<20}  {name:<24}  {scope:<24}  {:<9}  {expires}", s.id, s.state.as_str())?;
                }
            }
        }
        C::Show { subscription } => {
            let sub = store().await?.find_subscription(&subscription).await?;
            print_one(out, &sub, json)?;
        }
        C::Regenerate { subscription, primary: _, secondary, key } => {
            let slot = if secondary { KeySlot::Secondary } else { KeySlot::Primary };
            let explicit = supplied_key(key, &mut stdin).map_err(input)?;
            let (sub, issued) = store().await?.regenerate_key(&subscription, slot, explicit).await?;
            let k = issued.as_ref().map(|k| k.expose());
            if json {
                writeln!(out, "{}", json!({ "subscription": sub, "slot": slot.as_str(), "key": k }))?;
            } else {
                writeln!(out, "regenerated the {} key of {}", slot.as_str(), describe(&sub))?;
                if let Some(k) = k {
                    writeln!(out, "{} key: {k}", slot.as_str())?;
                    writeln!(out, "The key is shown only now: store it safely.")?;
                }
            }
        }
        C::Suspend { subscription } => state(out, json, store().await?, &subscription, State::Suspended).await?,
        C::Resume { subscription } => state(out, json, store().await?, &subscription, State::Active).await?,
        C::Cancel { subscription } => state(out, json, store().await?, &subscription, State::Cancelled).await?,
        C::Expire { subscription, at, never: _ } => {
            let when = at.map(|a| parse_expiry(&a, crate::store::unix_now())).transpose().map_err(input)?;
            let sub = store().await?.set_expiry(&subscription, when).await?;
            print_one(out, &sub, json)?;
        }
    }
    Ok(())
}

async fn state(out: &mut impl Write, json: bool, store: Store, id: &str, to: State) -> Result<(), Failure> {
    let sub = store.set_state(id, to).await?;
    print_one(out, &sub, json)
}

fn describe(s: &Subscription) -> String {
    format!("subscription {} (name: {}, scope: {}, state: {})", s.id, s.name, s.scope, s.state)
}

fn print_one(out: &mut impl Write, s: &Subscription, json: bool) -> Result<(), Failure> {
    if json {
        writeln!(out, "{}", json!(s))?;
    } else {
        writeln!(out, "id:       {}", s.id)?;
        writeln!(out, "name:     {}", s.name)?;
        writeln!(out, "scope:    {}", s.scope)?;
        writeln!(out, "state:    {}", s.state)?;
        writeln!(out, "expires:  {}", s.expires_at.map_or_else(|| "never".to_owned(), format_time))?;
        writeln!(out, "created:  {}", format_time(s.created_at))?;
        writeln!(out, "updated:  {}", format_time(s.updated_at))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_takes_a_time_or_a_duration() {
        assert_eq!(parse_expiry("2027-01-31T00:00:00Z", 0), Ok(1_801_353_600));
        assert_eq!(parse_expiry("90d", 1000), Ok(1000 + 90 * 86_400));
        assert!(parse_expiry("tomorrow", 0).is_err());
    }
}
