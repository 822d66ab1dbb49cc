//! The system under test, seen by the load generator: something that hands
//! out seats and takes them back. Tessera is one [`Target`]; Redis with a Lua
//! semaphore and an etcd semaphore are meant to be others, so that `compare`
//! drives every system with the same loop and measures it the same way.

use std::future::Future;

/// A system that hands out seats. One [`Session`] per simulated client.
pub trait Target: Send + Sync + 'static {
    type Session: Session;

    /// Name in the report, e.g. `tessera`.
    fn name(&self) -> &str;

    /// A session of client `client_index` with its own connection, so that
    /// every client pays for its own round trips and none queues behind another.
    fn session(&self, client_index: usize) -> anyhow::Result<Self::Session>;

    /// Fails when the system under test is gone (its process exited), so that
    /// a run stops at once instead of counting errors until its deadline.
    fn check_alive(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Resident memory of the system's processes, where it can be read.
    fn resident_bytes(&self) -> Option<u64> {
        None
    }
}

/// One client's connection to a [`Target`].
pub trait Session: Send + 'static {
    /// What a granted checkout returns and a check-in takes back.
    type Hold: Send + 'static;

    /// Asks for one seat for `holder`, a number naming who holds it (the
    /// client in the checkout/check-in loop; a fresh one per seat when seats
    /// are held, as when every seat belongs to another program).
    fn checkout(
        &mut self,
        holder: u64,
    ) -> impl Future<Output = Result<Checkout<Self::Hold>, OpError>> + Send;

    /// Gives a seat back.
    fn checkin(&mut self, hold: Self::Hold) -> impl Future<Output = Result<(), OpError>> + Send;

    /// Renews a held seat (a heartbeat, a lease refresh).
    fn heartbeat(&mut self, hold: &Self::Hold) -> impl Future<Output = Result<(), OpError>> + Send;
}

/// The answer to a checkout that the system gave on purpose.
pub enum Checkout<H> {
    Granted(H),
    /// Every seat is taken: a correct answer, counted apart from errors.
    Denied,
}

/// A failed operation: no answer, or an answer the benchmark did not expect.
#[derive(Debug)]
pub struct OpError {
    /// Short stable kind for counting, e.g. `transport` or `internal`.
    pub kind: String,
    /// What happened, for a person.
    pub message: String,
}

impl OpError {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> OpError {
        OpError {
            kind: kind.into(),
            message: message.into(),
        }
    }
}
