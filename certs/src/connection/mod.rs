//! Connection-level defences shared by every listener (the node's and
//! hub's gRPC, the hub's HTTPS front door): admission per address and in
//! all ([`gate`]), a watchdog and kill switch on each connection
//! ([`guard`]; [`Closable`] for the connections a client makes), the re-check of open connections when the CRL changes
//! ([`live`]), and request tracking for the idle timeout ([`tracking`]).

mod gate;
mod guard;
mod limits;
mod live;
mod tracking;

pub use gate::{Gate, Slot};
pub use guard::{Closable, Guarded, RequestGuard, Watch, Watched};
pub use limits::ConnectionLimits;
pub use live::{Live, Registration};
pub use tracking::{TrackRequests, Tracked, TrackedBody};
