//! Amazon MSK's IAM authentication: SigV4-signed `kafka-cluster:Connect` tokens for
//! SASL/OAUTHBEARER, and the credentials they are signed with. Plain code, without nginx.

pub mod credentials;
pub mod http;
pub mod sigv4;
