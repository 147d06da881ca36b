-- Sign-in attempts by name, newest last: how a name that is no account locks like one that is.
CREATE INDEX logins_name_at ON logins (name, at);
