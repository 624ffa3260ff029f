"""AWS's reference MSK IAM signer (PyPI aws-msk-iam-sasl-signer-python) with its clock fixed,
for t/msk_iam.rs: prints the token and its expiry (ms) for the credentials in the
environment. Usage: reference.py REGION YYYYMMDDTHHMMSSZ"""
import datetime
import sys
from unittest import mock

import botocore.auth
from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

region, when = sys.argv[1], sys.argv[2]
fixed = datetime.datetime.strptime(when, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


# botocore.auth takes its signing time from get_current_datetime() (recent botocore) or
# datetime.datetime.utcnow() (older): both fixed.
def fixed_now(remove_tzinfo=True):
    return fixed.replace(tzinfo=None) if remove_tzinfo else fixed


class FixedDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return fixed if tz else fixed.replace(tzinfo=None)

    @classmethod
    def utcnow(cls):
        return fixed.replace(tzinfo=None)


fake = mock.Mock(wraps=datetime)
fake.datetime = FixedDatetime
fake.timezone = datetime.timezone
patches = [mock.patch.object(botocore.auth, "datetime", fake)]
if hasattr(botocore.auth, "get_current_datetime"):
    patches.append(mock.patch.object(botocore.auth, "get_current_datetime", fixed_now))
for p in patches:
    p.start()
token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
for p in patches:
    p.stop()
print(token)
print(expiry_ms)
