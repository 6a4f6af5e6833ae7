//! Fixes an operator can paste, one step per deployment style where they differ.
//!
//! Commands carry the real registry address and repository but never a secret: credentials
//! appear only as `$OCI_USERNAME`, `$OCI_PASSWORD` and `$OCI_TOKEN`, which the operator exports in
//! their own shell, and so does a value only the operator knows (`$OCI_PUSH_REPOSITORY`, a
//! repository the account may push to). The names of the platform's service, unit, release and secret are the Stella
//! Ops defaults below. Anything the registry chose (a token realm, say) is single-quoted before it
//! goes into a command, since a hostile registry could otherwise smuggle shell syntax into a line
//! an operator pastes.

use crate::auth::{Credentials, RealmProblem};
use crate::config::{ConfigError, ProbeConfig};
use crate::http::TransportError;
use crate::model::RemediationStep;
use crate::push::{PushOutcome, TokenExchange, TokenProblem, Verdict};
use crate::report::{ALLOWED_HOSTS_KEY, VERIFY_COMMAND};

/// The Docker Compose service that reads the `OCI__*` settings.
const COMPOSE_SERVICE: &str = "platform";
/// The systemd unit of a bare-metal installation.
const SYSTEMD_UNIT: &str = "stellaops-platform";
/// The environment file of that unit.
const SYSTEMD_ENV_FILE: &str = "/etc/stellaops/platform.env";
/// Helm release, chart and namespace.
const HELM_RELEASE: &str = "stellaops";
const HELM_CHART: &str = "stellaops/stellaops";
const NAMESPACE: &str = "stellaops";
/// The Kubernetes secret holding the registry credentials.
const HELM_SECRET: &str = "stellaops-oci";
/// An example address for when no registry is configured yet.
const EXAMPLE_REGISTRY: &str = "https://registry.example.com";
/// What the shell says when `$OCI_PUSH_REPOSITORY` is not exported.
const PUSH_REPOSITORY_HINT: &str =
    "export OCI_PUSH_REPOSITORY as a repository the account may push to";

/// Steps for a probe outcome that is not a pass.
pub fn for_outcome(config: &ProbeConfig, outcome: &PushOutcome) -> Vec<RemediationStep> {
    let token = outcome.token.as_ref();
    match &outcome.verdict {
        Verdict::Permitted(_) => Vec::new(),
        Verdict::RateLimited | Verdict::Unavailable | Verdict::ServerError => transient(config),
        Verdict::Unreachable(error) => network(config, error),
        Verdict::TokenUnavailable(TokenProblem::Unreachable(TransportError::Denied { origin })) => {
            allow_origin(origin, "the token service the registry names")
        }
        Verdict::TokenUnavailable(TokenProblem::Realm(problem)) => realm_fix(problem),
        Verdict::TokenUnavailable(_) => token_service(config, token),
        Verdict::TokenRejected => token_trust(config, token),
        verdict => permission(config, &grant_advice(config, verdict), token),
    }
}

/// Steps for a configuration that cannot be probed.
pub fn for_config(error: &ConfigError) -> Vec<RemediationStep> {
    match error {
        ConfigError::RegistryNotConfigured | ConfigError::CredentialsNotConfigured => {
            configure_from_scratch()
        }
        ConfigError::IncompleteBasicAuth { .. } | ConfigError::Invalid { .. } => vec![step(
            format!("Correct the setting: {error}"),
            vec![VERIFY_COMMAND.to_string()],
        )],
    }
}

/// What to change in the registry or the settings, in words, for a permission-style answer.
fn grant_advice(config: &ProbeConfig, verdict: &Verdict) -> String {
    let repo = &config.repository;
    match verdict {
        Verdict::InvalidCredentials | Verdict::TokenRefused => format!(
            "renew the password or token and store it, then make sure the account may push to \
             `{repo}` ({})",
            vendor_hint(config.registry.host())
        ),
        Verdict::RepositoryUnknown => format!(
            "create `{repo}` in the registry, or set `OCI:PushTestRepository` to an existing \
             repository the account may push to"
        ),
        Verdict::ReadOnly => "set `OCI:RegistryUrl` to the primary, writable registry rather \
             than a read-only instance or pull-through cache"
            .to_string(),
        Verdict::Unexpected => format!(
            "set `OCI:RegistryUrl` to the registry API (`{}/v2/` answers 200 or 401)",
            config.registry
        ),
        _ => format!(
            "grant push on `{repo}` to the service account ({})",
            vendor_hint(config.registry.host())
        ),
    }
}

/// Where the push grant lives for well-known registries, recognised by host name.
fn vendor_hint(host: &str) -> &'static str {
    if host == "ghcr.io" {
        "GHCR: a token with `write:packages` and write access to the package"
    } else if host.contains(".dkr.ecr.") {
        "ECR: an IAM policy allowing `ecr:InitiateLayerUpload` and the other push actions"
    } else if host.ends_with("pkg.dev") {
        "Artifact Registry: `roles/artifactregistry.writer` on the repository"
    } else if host.ends_with("azurecr.io") {
        "ACR: the `AcrPush` role"
    } else if host.contains("docker.io") {
        "Docker Hub: an access token with Read & Write scope"
    } else if host.contains("gitlab") {
        "GitLab: Developer role or higher, and a token with `write_registry`"
    } else if host.contains("quay") {
        "Quay: Write permission on the repository for the robot account"
    } else {
        "Harbor: Developer role or higher on the project; GitLab: Developer or higher; \
         ECR: `ecr:InitiateLayerUpload`; GHCR: `write:packages`"
    }
}

fn permission(
    config: &ProbeConfig,
    advice: &str,
    token: Option<&TokenExchange>,
) -> Vec<RemediationStep> {
    vec![
        step(
            format!(
                "Docker Compose: {advice}; try a push by hand (it leaves a `doctor-push-test` tag \
                 to delete afterwards); to probe another repository, export \
                 `OCI_PUSH_REPOSITORY` as one the account may push to and write it to \
                 `OCI__PushTestRepository` in `.env`; then recreate the `{COMPOSE_SERVICE}` \
                 service"
            ),
            compose_commands(config),
        ),
        step(
            format!(
                "Bare metal / systemd: {advice}; the curl call must answer `202 Accepted` with a \
                 `Location` header (the session expires on its own), then restart the service"
            ),
            [curl_upload(config, token)]
                .into_iter()
                .chain([
                    format!("sudo systemctl restart {SYSTEMD_UNIT}"),
                    VERIFY_COMMAND.to_string(),
                ])
                .collect(),
        ),
        step(
            format!(
                "Kubernetes / Helm: {advice}; keep `oci.registryUrl`, `oci.pushTestRepository` \
                 and `oci.existingSecret` in `values.yaml` in line"
            ),
            helm_commands(config),
        ),
    ]
}

fn compose_commands(config: &ProbeConfig) -> Vec<String> {
    let image = format!(
        "{}/{}:doctor-push-test",
        config.registry.authority(),
        config.repository
    );
    vec![
        format!(
            "printf '%s' \"{}\" | docker login {} --username \"$OCI_USERNAME\" --password-stdin",
            secret_variable(&config.credentials),
            config.registry.authority()
        ),
        "docker pull busybox:latest".to_string(),
        format!("docker tag busybox:latest {image}"),
        format!("docker push {image}"),
        // Writing the repository that just failed back to `.env` would change nothing, so the
        // line takes the operator's choice and refuses to run without one.
        format!(
            ": \"${{OCI_PUSH_REPOSITORY:?{PUSH_REPOSITORY_HINT}}}\" && \
             sed -i '/^OCI__PushTestRepository=/d' .env && \
             echo \"OCI__PushTestRepository=$OCI_PUSH_REPOSITORY\" >> .env"
        ),
        format!("docker compose up -d {COMPOSE_SERVICE}"),
        VERIFY_COMMAND.to_string(),
    ]
}

fn helm_commands(config: &ProbeConfig) -> Vec<String> {
    let literals = match &config.credentials {
        Credentials::Basic { .. } => {
            "--from-literal=username=\"$OCI_USERNAME\" --from-literal=password=\"$OCI_PASSWORD\""
        }
        Credentials::Bearer { .. } => "--from-literal=token=\"$OCI_TOKEN\"",
    };
    vec![
        format!(
            "kubectl -n {NAMESPACE} create secret generic {HELM_SECRET} {literals} \
             --dry-run=client -o yaml | kubectl apply -f -"
        ),
        format!(
            "helm upgrade {HELM_RELEASE} {HELM_CHART} -n {NAMESPACE} --reuse-values \
             --set oci.registryUrl={} --set oci.pushTestRepository={} \
             --set oci.existingSecret={HELM_SECRET}",
            config.registry, config.repository
        ),
        VERIFY_COMMAND.to_string(),
    ]
}

/// The upload request the probe sends, as a curl command; behind a token fetch when the
/// registry asked for one.
fn curl_upload(config: &ProbeConfig, token: Option<&TokenExchange>) -> String {
    let url = config
        .registry
        .join_path(&format!("/v2/{}/blobs/uploads/", config.repository));
    let Some(token) = token else {
        let auth = match &config.credentials {
            Credentials::Basic { .. } => "-u \"$OCI_USERNAME:$OCI_PASSWORD\"",
            Credentials::Bearer { .. } => "-H \"Authorization: Bearer $OCI_TOKEN\"",
        };
        return format!("curl -i -X POST -H 'Content-Length: 0' {auth} {url}");
    };
    format!(
        "TOKEN=$({} | jq -r '.access_token // .token') && \
         curl -i -X POST -H 'Content-Length: 0' -H \"Authorization: Bearer $TOKEN\" {url}",
        curl_token(config, token)
    )
}

/// The token request for `pull,push`, as a curl command printing the answer.
fn curl_token(config: &ProbeConfig, token: &TokenExchange) -> String {
    let scope = format!("repository:{}:pull,push", config.repository);
    let mut params = Vec::new();
    params.extend(token.service.as_deref().map(|service| ("service", service)));
    params.push(("scope", scope.as_str()));
    let url = token.realm.with_query_params(&params).to_string();
    let auth = match &config.credentials {
        Credentials::Basic { .. } => "-u \"$OCI_USERNAME:$OCI_PASSWORD\"",
        Credentials::Bearer { .. } => "-H \"Authorization: Bearer $OCI_TOKEN\"",
    };
    format!("curl -s {auth} {}", shell_quote(&url))
}

fn secret_variable(credentials: &Credentials) -> &'static str {
    match credentials {
        Credentials::Basic { .. } => "$OCI_PASSWORD",
        Credentials::Bearer { .. } => "$OCI_TOKEN",
    }
}

fn transient(config: &ProbeConfig) -> Vec<RemediationStep> {
    vec![step(
        "All deployments: wait and re-run; if it persists, check the registry's health and \
         status page, and for rate limits use an account with a higher limit"
            .to_string(),
        vec![
            format!("curl -i {}/v2/", config.registry),
            VERIFY_COMMAND.to_string(),
        ],
    )]
}

/// `Doctor__Plugins__…__AllowedHosts`: the allowlist key in environment-variable spelling.
fn allowed_hosts_env() -> String {
    ALLOWED_HOSTS_KEY.replace(':', "__")
}

/// Adding `origin` to the check's outbound allowlist, for one run or for good.
///
/// The environment form goes through `env` because the key holds dots, which `export` refuses
/// in a variable name.
fn allow_origin(origin: &str, what: &str) -> Vec<RemediationStep> {
    let setting = shell_quote(&format!("{ALLOWED_HOSTS_KEY}={origin}"));
    let env_setting = shell_quote(&format!("{}={origin}", allowed_hosts_env()));
    vec![step(
        format!(
            "Allow {what} (`{origin}`) for this check: add it to `{ALLOWED_HOSTS_KEY}` in the \
             doctor's configuration (comma-separated, keeping any existing entries), or pass it \
             for one run"
        ),
        vec![
            format!("{VERIFY_COMMAND} --set {setting}"),
            format!("env {env_setting} {VERIFY_COMMAND}"),
        ],
    )]
}

/// Fixing a realm the probe will not use; the realm is the registry's setting, not the doctor's.
fn realm_fix(problem: &RealmProblem) -> Vec<RemediationStep> {
    let title = match problem {
        RealmProblem::Downgrade { .. } => {
            "Serve the registry's token service over https and set its `realm` (distribution: \
             `auth.token.realm`) to the https address; credentials are never sent to a plain-http \
             realm of an https registry"
        }
        RealmProblem::Missing | RealmProblem::Invalid { .. } => {
            "Fix the registry's token authentication so its `Bearer` challenge names an absolute \
             `realm` url (distribution: `auth.token.realm`)"
        }
    };
    vec![step(title.to_string(), vec![VERIFY_COMMAND.to_string()])]
}

/// Checking the token service by hand when it answered without a token or could not be reached.
fn token_service(config: &ProbeConfig, token: Option<&TokenExchange>) -> Vec<RemediationStep> {
    let commands = token
        .map(|token| curl_token(config, token))
        .into_iter()
        .chain([VERIFY_COMMAND.to_string()])
        .collect();
    vec![step(
        "Check the token service the registry names: the request must answer 200 with a `token` \
         or `access_token`; if it does not, fix the token service or the network path to it"
            .to_string(),
        commands,
    )]
}

/// Making the registry accept the tokens its own token service issues.
///
/// The command prints the claims of a fresh token (the payload of the JWT, base64url without
/// padding) so `iss`, `aud`, `nbf` and `exp` can be compared with the registry's settings.
fn token_trust(config: &ProbeConfig, token: Option<&TokenExchange>) -> Vec<RemediationStep> {
    let claims = token.map(|token| {
        format!(
            "{} | jq -r '.access_token // .token' | cut -d. -f2 | tr '_-' '/+' \
             | awk '{{ while (length($0) % 4) $0 = $0 \"=\"; print }}' | base64 -d; echo",
            curl_token(config, token)
        )
    });
    let commands = claims
        .into_iter()
        .chain(["date -u".to_string(), VERIFY_COMMAND.to_string()])
        .collect();
    vec![step(
        "Make the registry trust its token service: the token's `iss` must be the registry's \
         issuer (distribution: `auth.token.issuer`), its `aud` the registry's service \
         (`auth.token.service`), its signing certificate must be in the registry's \
         `auth.token.rootcertbundle`, and the clocks of both machines must agree (NTP); compare \
         the claims the first command prints, and `date -u` on both machines"
            .to_string(),
        commands,
    )]
}

/// `text` in single quotes, safe to paste into a POSIX shell whatever it holds.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn network(config: &ProbeConfig, error: &TransportError) -> Vec<RemediationStep> {
    let registry = &config.registry;
    let address = format!("{}:{}", registry.host(), registry.port());
    let (title, first) = match error {
        TransportError::Denied { origin } => return allow_origin(origin, "the registry"),
        TransportError::Dns => (
            "Check the host name in `OCI:RegistryUrl` and the DNS servers of this machine"
                .to_string(),
            Some(format!("getent hosts {}", registry.host())),
        ),
        TransportError::Tls(_) => (
            "Trust the registry's CA on this machine or fix its certificate; use `http://` only \
             for a registry on a trusted network"
                .to_string(),
            Some(format!(
                "openssl s_client -connect {address} -servername {} </dev/null",
                registry.host()
            )),
        ),
        TransportError::Timeout => (
            "Open the firewall path to the registry, or raise `OCI:TimeoutSeconds` (for example \
             `OCI__TimeoutSeconds=30`) on slow links"
                .to_string(),
            Some(format!(
                "curl -sv --max-time 30 -o /dev/null {registry}/v2/"
            )),
        ),
        TransportError::ConnectionRefused | TransportError::Other(_) => (
            "Check the scheme and port in `OCI:RegistryUrl`, that the registry runs, and firewall \
             rules between this machine and the registry"
                .to_string(),
            Some(format!("curl -sv -o /dev/null {registry}/v2/")),
        ),
    };
    let commands = first
        .into_iter()
        .chain([VERIFY_COMMAND.to_string()])
        .collect();
    vec![step(title, commands)]
}

fn configure_from_scratch() -> Vec<RemediationStep> {
    vec![
        step(
            "Docker Compose: set the registry and the service account in `.env`, then recreate \
             the service"
                .to_string(),
            vec![
                format!(
                    "printf 'OCI__RegistryUrl=%s\\nOCI__Username=%s\\nOCI__Password=%s\\n' \
                     \"{EXAMPLE_REGISTRY}\" \"$OCI_USERNAME\" \"$OCI_PASSWORD\" >> .env"
                ),
                format!("docker compose up -d {COMPOSE_SERVICE}"),
            ],
        ),
        step(
            format!("Bare metal / systemd: set the same keys in `{SYSTEMD_ENV_FILE}`"),
            vec![
                format!(
                    "printf 'OCI__RegistryUrl=%s\\nOCI__Username=%s\\nOCI__Password=%s\\n' \
                     \"{EXAMPLE_REGISTRY}\" \"$OCI_USERNAME\" \"$OCI_PASSWORD\" \
                     | sudo tee -a {SYSTEMD_ENV_FILE} >/dev/null"
                ),
                format!("sudo systemctl restart {SYSTEMD_UNIT}"),
            ],
        ),
        step(
            "Kubernetes / Helm: set `oci.registryUrl` and `oci.existingSecret` in `values.yaml`"
                .to_string(),
            vec![
                format!(
                    "kubectl -n {NAMESPACE} create secret generic {HELM_SECRET} \
                     --from-literal=username=\"$OCI_USERNAME\" \
                     --from-literal=password=\"$OCI_PASSWORD\" --dry-run=client -o yaml \
                     | kubectl apply -f -"
                ),
                format!(
                    "helm upgrade {HELM_RELEASE} {HELM_CHART} -n {NAMESPACE} --reuse-values \
                     --set oci.registryUrl={EXAMPLE_REGISTRY} --set oci.existingSecret={HELM_SECRET}"
                ),
            ],
        ),
    ]
}

fn step(title: String, commands: Vec<String>) -> RemediationStep {
    RemediationStep { title, commands }
}
