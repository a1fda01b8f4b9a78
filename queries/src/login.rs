//! Who may run SQL over the wire front-ends ([`crate::PgServer`], [`crate::FlightServer`]):
//! one check both use, so a Postgres password and a Flight bearer token are the same
//! credential (for aemos, a user's JWT) and are refused for the same reasons.

/// The check of a SQL client's credential.
pub trait SqlLogin: Send + Sync + 'static {
    /// Whether a client must give a credential (otherwise it is let in without one).
    fn credential_required(&self) -> bool;
    /// Checks `credential` (a Postgres password, a Flight bearer token); `Err` says why not.
    fn check(&self, credential: &str) -> Result<(), String>;
}
