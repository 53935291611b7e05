# A module shared by the apps of one interpreter (tests/apps/groups/probe.wsgi sets and shows
# `value`): one copy per interpreter, so apps in different application groups never see each
# other's value.
value = None
