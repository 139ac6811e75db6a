"""Verifies webhook deliveries with the Standard Webhooks reference library (PyPI
`standardwebhooks`), for the Rust webhook tests.

Reads {"secret": "whsec_...", "deliveries": [{"headers": {...}, "body": "..."}]} on stdin; writes
one {"ok": true, "payload": ...} or {"ok": false, "error": "..."} per delivery on stdout.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

spec = json.load(sys.stdin)
webhook = Webhook(spec["secret"])
results = []
for delivery in spec["deliveries"]:
    try:
        results.append({"ok": True, "payload": webhook.verify(delivery["body"], delivery["headers"])})
    except WebhookVerificationError as error:
        results.append({"ok": False, "error": str(error)})
json.dump(results, sys.stdout)
