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

    /// With the gateway's index from `env`; `gatehouse check` (no store opened) gets an empty one.
    pub fn for_env(env: &PolicyEnv, names: KeyNames, access: ApiAccess) -> Subscription {
        Subscription::new(env.subscriptions.clone().unwrap_or_default(), names, access)
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
