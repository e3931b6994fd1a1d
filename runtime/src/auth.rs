//! Who may do what: by the identity of a client certificate when the call
//! came over mutual TLS, else by bearer token. Tokens: two lists (lists
//! allow rotation), compared in constant time, never logged.

use subtle::ConstantTimeEq;
use switchyard_tls::Identity;

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or a token nobody knows.
    #[error("missing or unknown token")]
    Unauthenticated,
    /// A known token that may not do this.
    #[error("{0}")]
    PermissionDenied(String),
}

// === impl AuthError ===

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated => Self::unauthenticated(e.to_string()),
            AuthError::PermissionDenied(m) => Self::permission_denied(m),
        }
    }
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// No token, reads allowed.
    Reader,
    /// Register, KeepAlive, and Deregister of its own lease's instances.
    Register,
    /// Everything.
    Operator,
}

/// A caller's rights, from its certificate's identity or its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// What it may do.
    pub role: Role,
    /// The identity its certificate names, if it came with one.
    pub identity: Option<Identity>,
}

/// The service a component registers itself under: the only one whose
/// instances its identity may register.
const OWN_SERVICE: [(Identity, &str); 2] = [
    (Identity::Gateway, "switchyard-gateway"),
    (Identity::Balancer, "switchyard-balancer"),
];

// === impl Caller ===

impl Caller {
    /// Whether it may register, renew or deregister instances of
    /// `service`: an operator (identity or token) and a register token may
    /// touch any service; an identity only its own.
    pub fn may_register(&self, service: &str) -> Result<(), AuthError> {
        if self.role == Role::Operator {
            return Ok(());
        }
        match &self.identity {
            None => Ok(()),
            Some(identity) => match own_service(identity) {
                Some(own) if own == service => Ok(()),
                own => Err(AuthError::PermissionDenied(format!(
                    "{identity} may register instances of {} only, not of `{service}`",
                    own.map_or("no service".to_string(), |s| format!("`{s}`")),
                ))),
            },
        }
    }
}

/// The one service an identity may register instances of.
fn own_service(identity: &Identity) -> Option<&str> {
    match identity {
        Identity::Service(name) => Some(name),
        other => OWN_SERVICE
            .iter()
            .find(|(id, _)| id == other)
            .map(|(_, s)| *s),
    }
}

/// What an identity may do: an operator everything; a service, the
/// gateway and the balancer register their own instances and read; the
/// rest read.
fn identity_role(identity: &Identity) -> Role {
    match identity {
        Identity::Operator => Role::Operator,
        other if own_service(other).is_some() => Role::Register,
        _ => Role::Reader,
    }
}

/// The configured tokens.
#[derive(Clone)]
pub struct Tokens {
    register: Vec<Vec<u8>>,
    operator: Vec<Vec<u8>>,
    open_reads: bool,
}

// === impl Tokens ===

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        f.debug_struct("Tokens")
            .field("register", &self.register.len())
            .field("operator", &self.operator.len())
            .field("open_reads", &self.open_reads)
            .finish()
    }
}

impl Tokens {
    /// From the settings. With both lists empty, auth is off: everyone is an operator.
    pub fn new(register: &[String], operator: &[String], open_reads: bool) -> Self {
        let bytes = |v: &[String]| v.iter().map(|t| t.as_bytes().to_vec()).collect();
        Self {
            register: bytes(register),
            operator: bytes(operator),
            open_reads,
        }
    }

    /// True when no tokens are configured.
    pub fn disabled(&self) -> bool {
        self.register.is_empty() && self.operator.is_empty()
    }

    /// Resolves the `authorization` value (`Bearer <token>`) to a role.
    fn role(&self, header: Option<&str>) -> Result<Option<Role>, AuthError> {
        if self.disabled() {
            return Ok(Some(Role::Operator));
        }
        let Some(header) = header else {
            return Ok(None);
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or(header)
            .trim()
            .as_bytes();
        // Check every token of both lists, so timing does not say which matched.
        let operator = any_equal(&self.operator, token);
        let register = any_equal(&self.register, token);
        match (operator, register) {
            (true, _) => Ok(Some(Role::Operator)),
            (false, true) => Ok(Some(Role::Register)),
            (false, false) => Err(AuthError::Unauthenticated),
        }
    }

    /// The caller's role if it is at least `needed`.
    pub fn require(&self, header: Option<&str>, needed: Role) -> Result<Role, AuthError> {
        let role = match self.role(header)? {
            Some(role) => role,
            None if needed == Role::Reader && self.open_reads => Role::Reader,
            None => return Err(AuthError::Unauthenticated),
        };
        if role < needed {
            return Err(AuthError::PermissionDenied(format!(
                "this needs an {} token",
                if needed == Role::Operator {
                    "operator"
                } else {
                    "register"
                }
            )));
        }
        Ok(role)
    }

    /// The caller's rights if they reach `needed`: by `identity` when the
    /// call came over mutual TLS with a certificate that names one (the
    /// token is then not looked at), else by the `authorization` header.
    /// A refusal names the identity.
    pub fn caller(
        &self,
        identity: Option<&Identity>,
        header: Option<&str>,
        needed: Role,
    ) -> Result<Caller, AuthError> {
        let Some(identity) = identity else {
            return self.require(header, needed).map(|role| Caller {
                role,
                identity: None,
            });
        };
        let role = identity_role(identity);
        let unknown = matches!(identity, Identity::Unknown(_));
        if role < needed || (unknown && !self.open_reads && !self.disabled()) {
            let may = match role {
                Role::Operator => "do everything",
                Role::Register => "register its own instances and read",
                Role::Reader if unknown => "do nothing here: it names no Switchyard component",
                Role::Reader => "read only",
            };
            return Err(AuthError::PermissionDenied(format!("{identity} may {may}")));
        }
        Ok(Caller {
            role,
            identity: Some(identity.clone()),
        })
    }

    /// [`Tokens::require`] for a caller at `peer`, on an admin endpoint.
    /// With no tokens configured everyone is an operator, so a change is
    /// taken from loopback callers only: an admin port bound to every
    /// address must not take changes from whoever reaches it.
    pub fn require_from(
        &self,
        header: Option<&str>,
        needed: Role,
        peer: std::net::IpAddr,
    ) -> Result<Role, AuthError> {
        let role = self.require(header, needed)?;
        if self.disabled() && needed > Role::Reader && !peer.to_canonical().is_loopback() {
            return Err(AuthError::PermissionDenied(
                "no tokens are configured: changes are taken from loopback only".into(),
            ));
        }
        Ok(role)
    }
}

fn any_equal(list: &[Vec<u8>], token: &[u8]) -> bool {
    list.iter().fold(0u8, |found, t| {
        found | t.as_slice().ct_eq(token).unwrap_u8()
    }) == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(open: bool) -> Tokens {
        Tokens::new(
            &["reg-token-1".into(), "reg-token-2".into()],
            &["op-token-1".into()],
            open,
        )
    }

    #[test]
    fn roles_follow_token_lists() {
        let t = tokens(true);
        assert_eq!(
            t.require(Some("Bearer reg-token-2"), Role::Register),
            Ok(Role::Register)
        );
        assert_eq!(
            t.require(Some("Bearer op-token-1"), Role::Register),
            Ok(Role::Operator)
        );
        assert!(matches!(
            t.require(Some("Bearer reg-token-1"), Role::Operator),
            Err(AuthError::PermissionDenied(_))
        ));
        assert_eq!(
            t.require(None, Role::Register),
            Err(AuthError::Unauthenticated)
        );
        assert_eq!(
            t.require(Some("Bearer nope"), Role::Reader),
            Err(AuthError::Unauthenticated)
        );
        assert_eq!(t.require(None, Role::Reader), Ok(Role::Reader));
        assert_eq!(
            tokens(false).require(None, Role::Reader),
            Err(AuthError::Unauthenticated)
        );
        assert!(!format!("{t:?}").contains("reg-token"));
    }

    #[test]
    fn without_tokens_changes_come_from_loopback_only() {
        let open = Tokens::new(&[], &[], true);
        let (lo, lo6, far) = (
            "127.0.0.1".parse().expect("ip"),
            "::ffff:127.0.0.1".parse().expect("ip"),
            "192.0.2.7".parse().expect("ip"),
        );
        assert_eq!(
            open.require_from(None, Role::Operator, lo),
            Ok(Role::Operator)
        );
        assert_eq!(
            open.require_from(None, Role::Operator, lo6),
            Ok(Role::Operator)
        );
        assert!(matches!(
            open.require_from(None, Role::Operator, far),
            Err(AuthError::PermissionDenied(m)) if m.contains("loopback")
        ));
        assert_eq!(
            open.require_from(None, Role::Reader, far),
            Ok(Role::Operator)
        );
        // With tokens, the token decides, wherever the caller is.
        assert_eq!(
            tokens(true).require_from(Some("Bearer op-token-1"), Role::Operator, far),
            Ok(Role::Operator)
        );
    }

    #[test]
    fn a_certificate_identity_decides_over_a_token() {
        let t = tokens(false);
        let hello = Identity::Service("hello".into());
        let caller = t
            .caller(Some(&hello), Some("Bearer op-token-1"), Role::Register)
            .expect("a service registers");
        assert_eq!(caller.role, Role::Register);
        assert_eq!(caller.may_register("hello"), Ok(()));
        assert!(matches!(
            caller.may_register("echo"),
            Err(AuthError::PermissionDenied(m))
                if m.contains("spiffe://switchyard/service/hello") && m.contains("`echo`")
        ));
        assert!(matches!(
            t.caller(Some(&hello), Some("Bearer op-token-1"), Role::Operator),
            Err(AuthError::PermissionDenied(m)) if m.contains("service/hello")
        ));
        let gateway = t
            .caller(Some(&Identity::Gateway), None, Role::Register)
            .expect("a gateway registers itself");
        assert_eq!(gateway.may_register("switchyard-gateway"), Ok(()));
        assert!(gateway.may_register("hello").is_err());
        assert!(
            t.caller(Some(&Identity::Registry), None, Role::Register)
                .is_err()
        );
        assert_eq!(
            t.caller(Some(&Identity::Registry), None, Role::Reader)
                .map(|c| c.role),
            Ok(Role::Reader)
        );
        let op = t
            .caller(Some(&Identity::Operator), None, Role::Operator)
            .expect("operator");
        assert_eq!(op.may_register("anything"), Ok(()));
        // Another trust domain reads only where reads are open.
        let stranger = Identity::Unknown("spiffe://elsewhere/operator".into());
        assert!(t.caller(Some(&stranger), None, Role::Reader).is_err());
        assert!(
            tokens(true)
                .caller(Some(&stranger), None, Role::Reader)
                .is_ok()
        );
        assert!(
            tokens(true)
                .caller(Some(&stranger), None, Role::Register)
                .is_err()
        );
        // Without a certificate, the token decides as before, for any service.
        let token = t
            .caller(None, Some("Bearer reg-token-1"), Role::Register)
            .expect("token");
        assert_eq!(token.may_register("echo"), Ok(()));
    }

    #[test]
    fn no_tokens_means_auth_off() {
        let t = Tokens::new(&[], &[], true);
        assert_eq!(t.require(None, Role::Operator), Ok(Role::Operator));
    }
}
