"""Drives a running Confidant with a Python client generated from openapi/openapi.json by
openapi-python-client, and a secure user token signed with PyJWT as a company's backend would.

CONFIDANT_URL, CONFIDANT_ADMIN_EMAIL and CONFIDANT_ADMIN_PASSWORD name the server; the generated
package lives in build/ (made by tests/clients/run).
"""

import os
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "build"))

import jwt  # noqa: E402
from confidant_client import AuthenticatedClient, Client  # noqa: E402
from confidant_client.api.agents import create_agent, list_agents  # noqa: E402
from confidant_client.api.api_keys import create_api_key, list_api_keys  # noqa: E402
from confidant_client.api.applications import create_application, get_application  # noqa: E402
from confidant_client.api.auth import login, me  # noqa: E402
from confidant_client.api.authentication_keys import create_authentication_key  # noqa: E402
from confidant_client.api.conversations import get_conversation, list_conversations  # noqa: E402
from confidant_client.api.memories import create_memory, list_memories  # noqa: E402
from confidant_client.models import (  # noqa: E402
    Acl,
    AllAgentsScope,
    CreateAgent,
    CreateApiKey,
    CreateApplication,
    CreateAuthenticationKey,
    CreateMemory,
    ErrorBody,
    LoginRequest,
)

BASE = os.environ.get("CONFIDANT_URL", "http://127.0.0.1:8080")
EMAIL = os.environ.get("CONFIDANT_ADMIN_EMAIL", "admin@example.com")
PASSWORD = os.environ.get("CONFIDANT_ADMIN_PASSWORD", "confidant-dev-password")


class GeneratedClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        session = login.sync(client=Client(base_url=BASE), body=LoginRequest(email=EMAIL, password=PASSWORD))
        assert not isinstance(session, ErrorBody), session
        cls.operator = AuthenticatedClient(base_url=BASE, token=session.access)
        app = create_application.sync(client=cls.operator, body=CreateApplication(name=f"python-{uuid.uuid4().hex[:8]}"))
        assert not isinstance(app, ErrorBody), app
        cls.app_id = app.id
        agent = create_agent.sync(app.id, client=cls.operator, body=CreateAgent(name="Echo", instructions="Repeat.", memory=True))
        assert not isinstance(agent, ErrorBody), agent
        cls.agent_id = agent.id
        key = create_authentication_key.sync(
            app.id, client=cls.operator, body=CreateAuthenticationKey(name="backend", scope=AllAgentsScope(all_agents=True))
        )
        assert not isinstance(key, ErrorBody), key
        cls.kid, cls.secret = str(key.id), key.secret

    def user(self, sub):
        token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, self.secret, algorithm="HS256", headers={"kid": self.kid})
        return AuthenticatedClient(base_url=BASE, token=token)

    def test_operator_sees_the_application(self):
        profile = me.sync(client=self.operator)
        self.assertEqual(profile.email, EMAIL)
        self.assertIn(self.app_id, [a.id for a in profile.applications])
        app = get_application.sync(self.app_id, client=self.operator)
        self.assertEqual(app.id, self.app_id)
        agents = list_agents.sync(self.app_id, client=self.operator, limit=10)
        self.assertEqual([a.id for a in agents.data], [self.agent_id])
        self.assertIsNone(agents.next_cursor)

    def test_api_keys_are_shown_once(self):
        created = create_api_key.sync(self.app_id, client=self.operator, body=CreateApiKey(name="py", acl=[Acl.ADMIN]))
        self.assertTrue(created.key.startswith("cfd_"))
        listed = list_api_keys.sync(self.app_id, client=self.operator)
        self.assertFalse(hasattr(listed.data[0], "key"))
        self.assertTrue(created.key.startswith(listed.data[0].prefix))
        # The key itself administers the application.
        as_key = AuthenticatedClient(base_url=BASE, token=created.key)
        self.assertEqual(list_agents.sync(self.app_id, client=as_key).data[0].id, self.agent_id)

    def test_a_user_lists_their_conversations_and_memory(self):
        alice = self.user("alice")
        http = alice.get_httpx_client()
        for conversation in ("py-one", "py-two"):
            response = http.post(
                f"/v1/agents/{self.agent_id}/completions",
                json={"messages": [{"role": "user", "content": f"hello {conversation}"}], "conversation_id": conversation},
            )
            self.assertEqual(response.status_code, 200, response.text)
        page = list_conversations.sync(self.agent_id, client=alice)
        self.assertEqual([c.id for c in page.data], ["py-two", "py-one"])
        full = get_conversation.sync(self.agent_id, "py-one", client=alice)
        self.assertEqual([(m.role, m.content) for m in full.messages], [("user", "hello py-one"), ("assistant", "hello py-one")])
        memory = create_memory.sync(client=alice, body=CreateMemory(content="Alice prefers tea"))
        self.assertFalse(isinstance(memory, ErrorBody), memory)
        found = list_memories.sync(client=alice, q="tea")
        self.assertEqual([m.content for m in found.data], ["Alice prefers tea"])
        # Another user sees none of it.
        bob = self.user("bob")
        self.assertEqual(list_conversations.sync(self.agent_id, client=bob).data, [])
        self.assertEqual(list_memories.sync(client=bob).data, [])
        denied = list_conversations.sync_detailed(self.agent_id, client=AuthenticatedClient(base_url=BASE, token="nope"))
        self.assertEqual(denied.status_code, 401)
        self.assertEqual(denied.parsed.error, "invalid_token")


if __name__ == "__main__":
    unittest.main(verbosity=2)
