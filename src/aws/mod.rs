//! Amazon MSK's IAM authentication: SigV4-signed `kafka-cluster:Connect` tokens for
//! SASL/OAUTHBEARER. Plain code, without nginx.

pub mod sigv4;
