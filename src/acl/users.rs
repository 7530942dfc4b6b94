//! The proxy's table of client users: the `default` user and the users of
//! `[auth]`, changed at run time by `ACL SETUSER` and `ACL DELUSER` as
//! one Redis's users are. Nothing is saved: a restart starts again from
//! the configuration, and a reload applies the users whose configuration
//! changed (see [`Users::sync`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use super::log::AclLog;
use super::user::User;
use crate::config::AuthConfig;

/// How the configuration defines one user, to see what a reload changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Defined {
    password: Option<String>,
    rules: Option<String>,
}

#[derive(Debug, Default)]
struct Table {
    /// By name: byte order, as Redis lists its users.
    users: BTreeMap<Vec<u8>, Arc<User>>,
    /// The configuration's definitions last applied.
    defined: HashMap<Vec<u8>, Defined>,
}

/// The users, and the `ACL LOG`.
#[derive(Debug, Default)]
pub struct Users {
    table: RwLock<Table>,
    /// `ACL LOG`.
    pub log: AclLog,
}

/// The user the configuration defines: full access without `acl`.
fn configured(name: &str, defined: &Defined) -> Result<User, String> {
    if name == "default" {
        let mut user = User::default_user(defined.password.as_deref());
        if defined.rules.is_some() {
            // Named users but no default password: nobody logs in as
            // `default` (`user default off resetpass` in Redis terms).
            let _ = user.set(&[b"off", b"resetpass"]);
        }
        return Ok(user);
    }
    let rules = defined.rules.as_deref().unwrap_or("on ~* &* +@all");
    let mut user = User::from_rules(name, rules)?;
    if let Some(password) = &defined.password {
        let op = [b">", password.as_bytes()].concat();
        user.set(&[&op])
            .map_err(|_| "a password that cannot be set".to_string())?;
    }
    Ok(user)
}

/// What `auth` defines, by name.
fn definitions(auth: &AuthConfig) -> Vec<(String, Defined)> {
    let locked = auth.password.is_none() && !auth.users.is_empty();
    let mut out = vec![(
        "default".to_string(),
        Defined {
            password: auth.password.clone(),
            rules: locked.then(|| "off".to_string()),
        },
    )];
    for u in &auth.users {
        out.push((
            u.name.clone(),
            Defined {
                password: Some(u.password.clone()),
                rules: u.acl.clone(),
            },
        ));
    }
    out
}

impl Users {
    /// The users of a configuration.
    pub fn new(auth: &AuthConfig) -> Result<Users, String> {
        let users = Users::default();
        users.sync(auth)?;
        Ok(users)
    }

    /// Checks that `auth` defines valid users (at load and reload).
    pub fn validate(auth: &AuthConfig) -> Result<(), String> {
        for (name, defined) in definitions(auth) {
            configured(&name, &defined).map_err(|e| format!("user '{name}': {e}"))?;
        }
        Ok(())
    }

    /// Applies a (re)loaded configuration: a user it defines differently
    /// than last time (or newly) takes its definition, replacing any
    /// `ACL SETUSER` changes; a user it no longer defines is removed; the
    /// users created with `ACL SETUSER` stay. Nothing changes on an error.
    pub fn sync(&self, auth: &AuthConfig) -> Result<(), String> {
        let wanted = definitions(auth);
        let mut built = Vec::new();
        let mut table = self.write();
        for (name, defined) in &wanted {
            if table.defined.get(name.as_bytes()) != Some(defined) {
                let user = configured(name, defined).map_err(|e| format!("user '{name}': {e}"))?;
                built.push((name.as_bytes().to_vec(), defined.clone(), user));
            }
        }
        let gone: Vec<Vec<u8>> = table
            .defined
            .keys()
            .filter(|n| !wanted.iter().any(|(w, _)| w.as_bytes() == n.as_slice()))
            .cloned()
            .collect();
        for name in gone {
            table.defined.remove(&name);
            table.users.remove(&name);
        }
        for (name, defined, user) in built {
            table.defined.insert(name.clone(), defined);
            table.users.insert(name, Arc::new(user));
        }
        Ok(())
    }

    /// A user by name.
    pub fn get(&self, name: &[u8]) -> Option<Arc<User>> {
        self.read().users.get(name).cloned()
    }

    /// The user `name` if `password` logs it in. An unknown name costs
    /// the same hashing, so timing does not tell which names exist.
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        match self.get(name) {
            Some(user) => user.accepts(password).then_some(user),
            None => {
                std::hint::black_box(super::user::hash_password(password));
                None
            }
        }
    }

    /// The `default` user when a new connection is logged in as it
    /// without `AUTH` (it is `on` and `nopass`).
    pub fn automatic(&self) -> Option<Arc<User>> {
        self.get(b"default").filter(|u| u.enabled() && u.nopass())
    }

    /// Whether the `default` user takes any password (`AUTH <password>`
    /// is then an error, as in Redis).
    pub fn default_nopass(&self) -> bool {
        self.get(b"default").is_some_and(|u| u.nopass())
    }

    /// `ACL SETUSER`: creates or changes `name` with `ops`, all or none.
    pub fn set_user(&self, name: &[u8], ops: &[&[u8]]) -> Result<(), Option<super::user::BadRule>> {
        let mut table = self.write();
        let mut user = match table.users.get(name) {
            Some(u) => User::clone(u),
            None => User::new(name),
        };
        user.set(ops)?;
        table.users.insert(name.to_vec(), Arc::new(user));
        Ok(())
    }

    /// `ACL DELUSER`: removes the users named, returns those that existed.
    pub fn delete<'a>(&self, names: &[&'a [u8]]) -> Vec<&'a [u8]> {
        let mut table = self.write();
        names
            .iter()
            .copied()
            .filter(|n| table.users.remove(*n).is_some())
            .collect()
    }

    /// Every user, in name order.
    pub fn all(&self) -> Vec<Arc<User>> {
        self.read().users.values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;

    fn auth(password: Option<&str>, users: &[(&str, Option<&str>)]) -> AuthConfig {
        AuthConfig {
            password: password.map(Into::into),
            users: users
                .iter()
                .map(|(name, acl)| UserConfig {
                    name: (*name).into(),
                    password: "pw".into(),
                    acl: acl.map(Into::into),
                })
                .collect(),
        }
    }

    #[test]
    fn configuration_and_run_time_changes() {
        let users = Users::new(&auth(None, &[])).unwrap();
        assert!(users.automatic().is_some(), "no [auth]: no AUTH needed");
        let users = Users::new(&auth(None, &[("app", Some("on ~app:* +@all"))])).unwrap();
        assert!(
            users.automatic().is_none(),
            "users without a default password"
        );
        assert!(users.authenticate(b"default", b"").is_none());
        assert!(users.authenticate(b"app", b"pw").is_some());
        assert!(users.authenticate(b"app", b"no").is_none());
        users.set_user(b"temp", &[b"on", b"nopass"]).unwrap();
        users.set_user(b"app", &[b">other"]).unwrap();
        // An unrelated reload keeps both run-time changes.
        users
            .sync(&auth(Some("admin"), &[("app", Some("on ~app:* +@all"))]))
            .unwrap();
        assert!(users.automatic().is_none());
        assert!(users.authenticate(b"default", b"admin").is_some());
        assert!(users.authenticate(b"app", b"other").is_some());
        assert!(users.authenticate(b"temp", b"x").is_some());
        // A changed definition replaces the user; a dropped one is gone.
        users
            .sync(&auth(Some("admin"), &[("app", Some("on ~* +get"))]))
            .unwrap();
        assert!(users.authenticate(b"app", b"other").is_none());
        users.sync(&auth(None, &[])).unwrap();
        assert!(users.get(b"app").is_none());
        let names: Vec<Vec<u8>> = users.all().iter().map(|u| u.name().to_vec()).collect();
        assert_eq!(names, vec![b"default".to_vec(), b"temp".to_vec()]);
        assert_eq!(users.delete(&[b"temp", b"nosuch"]), vec![&b"temp"[..]]);
        // A bad definition changes nothing.
        assert!(users
            .sync(&auth(None, &[("bad", Some("on +nosuch"))]))
            .is_err());
        assert!(users.get(b"bad").is_none());
    }
}
