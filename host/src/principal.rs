//! Who a message acts for: the plugin running (if any), who sent it the message it answers,
//! the overrides the message passed through with `prior`, and whether the chain began at the
//! network. The core keeps it up to date along a call chain and the data store judges by it;
//! the engine carries it down its calls without reading it, so access rules never touch the
//! engine. Pure.

use std::sync::Arc;

/// A plugin, as the subject of access rules: its name and what its configuration grants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The plugin's name, as callers see it in errors.
    pub name: String,
    /// The entity bases the plugin may use (`[[plugin]] data`); `None` allows every base.
    pub data: Option<Vec<String>>,
}

/// Who a message acts for, carried down its call chain.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    /// The plugin whose guest code is running (and so made any act nested in it); `None` for
    /// an act from an ingress or the host itself. Native actions decide by it what the caller
    /// may do (the data store's `expose` and `[[plugin]] data` rules).
    pub caller: Option<Arc<Caller>>,
    /// Who sent the message the running plugin action answers (the `caller` it was called
    /// with): its `prior` passes that same message on for them, so what lies behind an
    /// override (the data store, say) judges the sender, not the override.
    pub sender: Option<Arc<Caller>>,
    /// The plugins whose overriding actions passed this message on with `prior`: what lies
    /// behind them allows only what each of them may do as well as the sender (a guard limited
    /// to some bases cannot `prior` a save into another). Shared and usually absent: every
    /// call's context carries a principal, and a thin one keeps it the size it was before
    /// (callgrind: each act's future is copied whole; 8 bytes more per context cost 2.6 %).
    pub via: Option<Arc<[Arc<Caller>]>>,
    /// True when the chain started at a network listener rather than in this process
    /// (`wasmeca act`, a plugin's init), so actions not exposed to the network can refuse it.
    pub remote: bool,
}

impl Principal {
    /// An act from an ingress (`remote`: the network) or from this process.
    pub fn from_ingress(remote: bool) -> Self {
        Self {
            remote,
            ..Self::default()
        }
    }

    /// A new act made while this one runs: made by the same plugin, for a chain that began
    /// where this one did; a fresh message, so no sender and no override on its way.
    pub fn nested(&self) -> Self {
        Self {
            caller: self.caller.clone(),
            sender: None,
            via: None,
            remote: self.remote,
        }
    }

    /// The plugin `plugin` starts answering this message: what it acts is its own, and its
    /// `prior` goes on for whoever sent the message.
    pub fn answered_by(&mut self, plugin: &Arc<Caller>) {
        self.sender = self.caller.replace(plugin.clone());
    }

    /// The running plugin passes the message on with `prior`: for its sender again, through
    /// one more override.
    pub fn through_prior(&self) -> Self {
        let via: Arc<[Arc<Caller>]> = self
            .overrides()
            .cloned()
            .chain(self.caller.clone())
            .collect();
        Self {
            caller: self.sender.clone(),
            sender: None,
            via: Some(via),
            remote: self.remote,
        }
    }

    /// The overrides the message passed through, oldest first.
    pub fn overrides(&self) -> impl Iterator<Item = &Arc<Caller>> {
        self.via.iter().flat_map(|via| via.iter())
    }

    /// Work a plugin does outside any message (an observer run): its own acts, from this
    /// process.
    pub fn plugin(plugin: &Arc<Caller>) -> Self {
        Self {
            caller: Some(plugin.clone()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str) -> Arc<Caller> {
        Arc::new(Caller {
            name: name.into(),
            data: None,
        })
    }

    #[test]
    fn prior_goes_on_for_the_sender_through_the_override() {
        let (app, guard) = (caller("app"), caller("guard"));
        // The network sends to app; app acts; guard (an override) answers and calls prior.
        let mut p = Principal::from_ingress(true);
        p.answered_by(&app);
        assert_eq!(p.caller.as_deref().map(|c| c.name.as_str()), Some("app"));
        let mut nested = p.nested();
        assert!(nested.remote && nested.sender.is_none());
        nested.answered_by(&guard);
        assert_eq!(
            nested.sender.as_deref().map(|c| c.name.as_str()),
            Some("app")
        );
        let behind = nested.through_prior();
        assert_eq!(
            behind.caller.as_deref().map(|c| c.name.as_str()),
            Some("app")
        );
        let through: Vec<&str> = behind.overrides().map(|c| c.name.as_str()).collect();
        assert_eq!(through, ["guard"]);
        assert!(behind.remote, "the chain still began at the network");
        let fresh = behind.nested();
        assert_eq!(
            fresh.overrides().count(),
            0,
            "a fresh act passed no override"
        );
    }
}
