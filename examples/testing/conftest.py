"""
pytest runs C{test_chat_pytest.py} here; C{test_chat_trial.py} is for
trial (a trial C{TestCase} that returns Deferreds does not mix with
pytest-twisted in one process).
"""

collect_ignore = ["test_chat_trial.py"]
