//! gRPC service definitions of the ThoughtComm runtime (tonic + prost), generated at build time
//! from `proto/thoughtcomm/runtime/v1/runtime.proto` (the package `thoughtcomm.runtime.v1`).
//!
//! `v1` holds the messages, `v1::runtime_service_server` the server trait and
//! `v1::runtime_service_client` the client; [`FILE_DESCRIPTOR_SET`] serves reflection.

/// The generated code of the `thoughtcomm.runtime.v1` package.
pub mod thoughtcomm {
    pub mod runtime {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("thoughtcomm.runtime.v1");
        }
    }
}

pub use thoughtcomm::runtime::v1;

pub mod client;

/// Largest message the server accepts or sends, and the client too (prefix embeddings and hidden
/// states can be big).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The encoded `FileDescriptorSet` of runtime.proto, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("runtime_descriptor");

/// Where the .proto lives in the source tree (for clients that generate their own stubs).
pub const PROTO_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/thoughtcomm/runtime/v1/runtime.proto");
