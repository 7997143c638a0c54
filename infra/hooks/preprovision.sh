#!/bin/sh
# azd preprovision hook: make sure the azd environment holds the two secrets every replica shares.
# Generated once, then kept (in .azure/<env>/.env, which azd keeps out of git); set your own with
#   azd env set CALLBOT_SIGNING_KEY <value>      (at least 32 characters)
#   azd env set CALLBOT_WEBHOOK_SECRET <value>   (at least 32 URL-safe characters: A-Z a-z 0-9 - _)
# azd passes the environment's values to hooks as environment variables.
set -eu

random_secret() {
    # 32 random bytes, base64url without padding: 43 URL-safe characters.
    head -c 32 /dev/urandom | base64 | tr -d '\n=' | tr '+/' '-_'
}

for name in CALLBOT_SIGNING_KEY CALLBOT_WEBHOOK_SECRET; do
    eval "current=\${$name:-}"
    if [ -z "$current" ]; then
        azd env set "$name" "$(random_secret)" > /dev/null
        echo "preprovision: generated $name for this azd environment"
    else
        echo "preprovision: $name already set, kept"
    fi
done

# A value set by hand must still fit: the webhook secret travels in a URL, both are checked for length by Bicep.
case "${CALLBOT_WEBHOOK_SECRET:-}" in
    *[!A-Za-z0-9_-]*)
        echo "preprovision: CALLBOT_WEBHOOK_SECRET must hold URL-safe characters only (A-Z a-z 0-9 - _)" >&2
        exit 1
        ;;
esac
