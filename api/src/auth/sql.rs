//! The Postgres front-end's logins: the password is a user's JWT, and every role may query.
//! In `dev` mode no password is asked, as HTTP asks no credential.

use std::sync::Arc;

use aemos_queries::PgLogin;

use super::{Access, Auth};

/// [`PgLogin`] over the credential checks every protocol shares.
pub struct SqlLogin(pub Arc<Auth>);

impl PgLogin for SqlLogin {
    fn password_required(&self) -> bool {
        self.0.production()
    }

    /// The user name is not checked against the token's subject: clients (Grafana, DBeaver)
    /// insist on one, and the JWT alone says who is asking.
    fn check(&self, _user: &str, password: &str) -> Result<(), String> {
        self.0
            .authorize(Some(password), &Access::Query)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
