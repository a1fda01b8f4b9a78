//! The SQL front-ends' logins (Postgres, Flight SQL): the credential is a user's JWT, and every
//! role may query. In `dev` mode none is asked, as HTTP asks no credential.

use std::sync::Arc;

use aemos_queries::SqlLogin;

use super::{Access, Auth};

/// [`SqlLogin`] over the credential checks every protocol shares.
pub struct SqlAuth(pub Arc<Auth>);

impl SqlLogin for SqlAuth {
    fn credential_required(&self) -> bool {
        self.0.production()
    }

    /// A Postgres user name is not checked against the token's subject: clients (Grafana,
    /// DBeaver) insist on one, and the JWT alone says who is asking.
    fn check(&self, credential: &str) -> Result<(), String> {
        self.0
            .authorize(Some(credential), &Access::Query)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
