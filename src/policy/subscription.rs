//! `subscription`: the subscription-key check (APIM's built-in check for APIs whose product
//! requires a subscription). Not written in the config: the chain builder puts it first in the
//! inbound section of every API that `products:` protects (or where a key is optional), built
//! from `identity::subscription::ProductTable::access` and the API's `subscription_key` names.
//!
//! Per request: the key is taken from the header (else the query), both are removed from the
//! request, the key is judged against the in-memory index, and the caller is recorded on the
//! exchange for later policies (`{subscription.id}`, `{product.name}`). No allocation unless the
//! key came in the query (the URI is rebuilt without it).

use std::sync::Arc;

use super::{Exchange, Outcome, Policy, PolicyEnv, Step};
use crate::identity::subscription::{ApiAccess, KeyNames, SubscriptionIndex};

#[derive(Debug)]
pub struct Subscription {
    index: Arc<SubscriptionIndex>,
    names: KeyNames,
    access: ApiAccess,
}

impl Subscription {
    pub fn new(index: Arc<SubscriptionIndex>, names: KeyNames, access: ApiAccess) -> Subscription {
        Subscription { index, names, access }
    }

    /// With the gateway's index from `env` (empty under `gatehouse check`).
    pub fn for_env(env: &PolicyEnv, names: KeyNames, access: ApiAccess) -> Subscription {
        Subscription::new(env.subscriptions.clone(), names, access)
    }
}

impl Policy for Subscription {
    fn kind(&self) -> &'static str {
        "subscription"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        match self.index.authenticate(&self.access, &self.names, &mut x.request) {
            Ok(caller) => {
                if caller.is_some() {
                    x.caller = caller;
                }
                Outcome::Continue.into()
            }
            Err(denial) => Outcome::Reject(Box::new(denial.problem(&self.names))).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use http::{HeaderValue, StatusCode};

    use super::*;
    use crate::identity::subscription::Denial;
    use crate::policy::{run_section, Chain, Entry, Flow, Stage};
    use crate::respond::Layer;
    use crate::route::{Api, Route};

    fn exchange(uri: &str, key: Option<&str>) -> Exchange {
        let mut b = http::Request::builder().uri(uri);
        if let Some(k) = key {
            b = b.header("Ocp-Apim-Subscription-Key", k);
        }
        let api = Arc::new(Api {
            name: "orders".into(),
            prefix: "/orders".into(),
            backend: Some("b".into()),
            server_timing: false,
        });
        Exchange {
            request: b.body(()).expect("request").into_parts().0,
            path: "/orders".into(),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            request_id: HeaderValue::from_static("rid"),
            route: Arc::new(Route {
                api,
                operation: None,
                chain: Arc::new(Chain::default()),
                metrics: Default::default(),
            }),
            body_limit: 1024,
            ..Exchange::blank()
        }
    }

    fn policy(required: bool) -> Vec<Entry> {
        let access = ApiAccess { api: "orders".into(), products: vec![Arc::from("starter")].into(), required };
        let p = Subscription::for_env(&PolicyEnv::default(), KeyNames::default(), access);
        vec![Entry { policy: Arc::new(p), scope: "product:starter".into() }]
    }

    #[tokio::test]
    async fn a_rejection_is_a_policy_problem_with_scope_and_challenge() {
        let chain = policy(true);
        let mut x = exchange("/orders?subscription-key=unknown-key-xxxxxxxxxxxxxx", None);
        let Flow::Reject(p) = run_section(&mut x, Stage::Inbound, &chain).await else { panic!("not rejected") };
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
        assert_eq!(p.kind, Denial::Invalid.kind());
        assert_eq!(
            (p.layer, p.policy, p.scope.as_deref()),
            (Layer::Policy, Some("subscription"), Some("product:starter"))
        );
        assert!(p.headers.contains_key(http::header::WWW_AUTHENTICATE));
        assert_eq!(x.request.uri, "/orders", "the key never goes further, even when refused");
        let body = p.body("rid");
        assert!(!body.contains("unknown-key"), "{body}");
    }

    #[tokio::test]
    async fn an_open_product_lets_anonymous_callers_through() {
        let chain = policy(false);
        let mut x = exchange("/orders", None);
        assert!(matches!(run_section(&mut x, Stage::Inbound, &chain).await, Flow::Continue));
        assert!(x.caller.is_none());
    }

    #[tokio::test]
    async fn an_accepted_key_names_the_caller_and_is_not_forwarded() {
        use crate::config::store::StoreConfig;
        use crate::store::{NewSubscription, Scope, Store};
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StoreConfig { url: "sqlite://t.db".into(), ..StoreConfig::default() };
        let store = Store::open(&cfg, dir.path()).await.expect("store");
        let new = NewSubscription {
            name: "app".into(),
            scope: Scope::Product("starter".into()),
            primary_key: None,
            secondary_key: None,
            expires_at: None,
        };
        let (sub, keys) = store.create_subscription(new).await.expect("create");
        // As at start-up: policies are compiled against the env's empty index, then it is filled.
        let env = PolicyEnv::default();
        let access = ApiAccess { api: "orders".into(), products: vec![Arc::from("starter")].into(), required: true };
        let p = Subscription::for_env(&env, KeyNames::default(), access);
        env.subscriptions.refresh(&store).await.expect("first load");
        let chain = vec![Entry { policy: Arc::new(p), scope: "product:starter".into() }];
        let key = keys.primary.expect("key");
        let mut x = exchange("/orders?a=1", Some(key.expose()));
        assert!(matches!(run_section(&mut x, Stage::Inbound, &chain).await, Flow::Continue));
        let caller = x.caller.as_ref().expect("caller");
        assert_eq!((&*caller.subscription_id, caller.product.as_deref()), (sub.id.as_str(), Some("starter")));
        assert!(!x.request.headers.contains_key("ocp-apim-subscription-key"));
        assert_eq!(x.request.uri, "/orders?a=1");
        // The same valid key sent twice is no key: refused as invalid, and neither copy goes on.
        let mut twice = exchange("/orders", Some(key.expose()));
        let value = HeaderValue::from_str(key.expose()).expect("value");
        twice.request.headers.append("ocp-apim-subscription-key", value);
        let Flow::Reject(p) = run_section(&mut twice, Stage::Inbound, &chain).await else { panic!("accepted") };
        assert_eq!(p.kind, Denial::Invalid.kind());
        assert!(!twice.request.headers.contains_key("ocp-apim-subscription-key"));
    }
}
