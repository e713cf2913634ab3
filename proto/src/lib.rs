//! gRPC service definitions of the ThoughtComm runtime (tonic + prost).
//!
//! The services are defined by the gRPC runtime issue (#5); until then this crate is empty so
//! that the workspace already has the shape of the design card.
