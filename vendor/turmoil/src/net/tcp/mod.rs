pub(crate) mod listener;

// uclab: a stream's segment queue (issue 19).
pub(crate) mod queue;

mod split_owned;
pub use split_owned::{OwnedReadHalf, OwnedWriteHalf, ReuniteError};

pub(crate) mod stream;
