#!/usr/bin/env python3
"""Talk to the doctor's WeChat webhook from a terminal, the way WeChat's servers do.

Each message is posted as WeChat's XML with the query-string signature
sha1(sorted([token, timestamp, nonce])), and the XML reply's text is printed. With
messages on the command line it sends them in order; without, it reads lines from stdin.

    python3 clients/wechat_simulator.py --token=secret 我这两天咳嗽，还有点发烧 而且痰多
    python3 clients/wechat_simulator.py --token=secret --subscribe      # then type messages

Only the standard library is used. Exits non-zero when the webhook refuses a request.
"""

import argparse
import hashlib
import random
import string
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape


def signed_url(url, token):
    timestamp = str(int(time.time()))
    nonce = "".join(random.choices(string.ascii_letters + string.digits, k=10))
    signature = hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()
    query = urllib.parse.urlencode({"signature": signature, "timestamp": timestamp, "nonce": nonce})
    return f"{url}{'&' if '?' in url else '?'}{query}"


def envelope(user, account, msg_type, fields):
    parts = [
        f"<ToUserName><![CDATA[{account}]]></ToUserName>",
        f"<FromUserName><![CDATA[{user}]]></FromUserName>",
        f"<CreateTime>{int(time.time())}</CreateTime>",
        f"<MsgType><![CDATA[{msg_type}]]></MsgType>",
    ]
    parts += [f"<{k}>{escape(v)}</{k}>" for k, v in fields.items()]
    return "<xml>" + "".join(parts) + "</xml>"


def post(args, body):
    request = urllib.request.Request(
        signed_url(args.url, args.token),
        data=body.encode("utf-8"),
        headers={"Content-Type": "text/xml; charset=utf-8"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        sys.exit(f"the webhook refused the request: HTTP {e.code} {e.read().decode('utf-8', 'replace')}")
    except urllib.error.URLError as e:
        sys.exit(f"cannot reach {args.url}: {e.reason}")
    if answer.strip() in ("", "success"):
        return None
    return ET.fromstring(answer).findtext("Content")


def say(args, body):
    content = post(args, body)
    print(f"医生：{content if content is not None else '（没有回复）'}\n", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/wechat")
    parser.add_argument("--token", required=True, help="the doctor's --wechat_token")
    parser.add_argument("--user", default="o_simulated_user", help="the sender's OpenID")
    parser.add_argument("--account", default="gh_doctor", help="the official account's id")
    parser.add_argument("--subscribe", action="store_true", help="follow the account first")
    parser.add_argument("messages", nargs="*")
    args = parser.parse_args()

    if args.subscribe:
        say(args, envelope(args.user, args.account, "event", {"Event": "subscribe"}))
    messages = args.messages or (line.strip() for line in sys.stdin)
    for text in messages:
        if not text:
            continue
        print(f"我：{text}", flush=True)
        say(args, envelope(args.user, args.account, "text", {"Content": text, "MsgId": str(random.getrandbits(63))}))


if __name__ == "__main__":
    main()
