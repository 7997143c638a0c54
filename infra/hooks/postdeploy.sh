#!/bin/sh
# azd postdeploy hook: subscribe the app to the IncomingCall events of the ACS resource.
#
# Runs after `azd deploy` (and so after `azd up`), when the real image serves the webhook: creating the Event Grid
# subscription makes Event Grid POST a SubscriptionValidationEvent to the app, which must answer it. Idempotent.
#
# Needs: az (logged in), curl. Reads from the azd environment: AZURE_RESOURCE_GROUP, AZURE_COMMUNICATION_NAME,
# SERVICE_CALLBOT_FQDN, CALLBOT_WEBHOOK_SECRET. CALLBOT_READY_TIMEOUT (seconds, default 300) bounds the wait.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
template="$here/../eventgrid.bicep"

for name in AZURE_RESOURCE_GROUP AZURE_COMMUNICATION_NAME SERVICE_CALLBOT_FQDN CALLBOT_WEBHOOK_SECRET; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "postdeploy: $name is not set in the azd environment (run 'azd provision' first)" >&2
        exit 1
    fi
done
case "$CALLBOT_WEBHOOK_SECRET" in
    *[!A-Za-z0-9_-]*)
        echo "postdeploy: CALLBOT_WEBHOOK_SECRET must hold URL-safe characters only (A-Z a-z 0-9 - _): it is sent as a query parameter" >&2
        exit 1
        ;;
esac
for tool in az curl; do
    if ! command -v "$tool" > /dev/null 2>&1; then
        echo "postdeploy: '$tool' is needed to create the Event Grid subscription" >&2
        exit 1
    fi
done

# 1. Wait until the new revision is ready (the URL is public; nothing secret is sent).
timeout="${CALLBOT_READY_TIMEOUT:-300}"
url="https://$SERVICE_CALLBOT_FQDN/readyz"
echo "postdeploy: waiting for $url (up to ${timeout}s)"
waited=0
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$url" || true)" = "200" ]; do
    if [ "$waited" -ge "$timeout" ]; then
        echo "postdeploy: the app did not become ready; see its logs:" >&2
        echo "  az containerapp logs show -g $AZURE_RESOURCE_GROUP -n ${SERVICE_CALLBOT_NAME:-<app>} --tail 100" >&2
        exit 1
    fi
    sleep 5
    waited=$((waited + 5))
done

# 2. Deploy the system topic + subscription. The secret goes through a private parameters file, not the command
#    line (which other local users could read from the process list).
params=$(mktemp)
trap 'rm -f "$params"' EXIT INT TERM
chmod 600 "$params"
cat > "$params" <<JSON
{
  "\$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
  "contentVersion": "1.0.0.0",
  "parameters": {
    "acsName": { "value": "$AZURE_COMMUNICATION_NAME" },
    "appFqdn": { "value": "$SERVICE_CALLBOT_FQDN" },
    "webhookSecret": { "value": "$CALLBOT_WEBHOOK_SECRET" }
  }
}
JSON

echo "postdeploy: subscribing https://$SERVICE_CALLBOT_FQDN/api/incoming-call to IncomingCall events"
az deployment group create \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --name callbot-eventgrid \
    --template-file "$template" \
    --parameters "@$params" \
    --output none
echo "postdeploy: Event Grid subscription 'callbot-incoming-call' is in place"
