-- Office accounts. A role and an area make the scope: province (everything), district (its
-- communes), commune (one commune).
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    role          TEXT    NOT NULL, -- 'province' | 'district' | 'commune'
    area          TEXT    NOT NULL, -- province, district or commune code
    password_hash TEXT    NOT NULL, -- argon2id PHC string; the password itself is never stored
    -- The device number this person's edits carry (settling a conflict is an ordinary edit).
    device        INTEGER NOT NULL REFERENCES devices (id),
    failed_logins INTEGER NOT NULL DEFAULT 0, -- failures since the last success or lockout
    locked_until  INTEGER,                    -- unix milliseconds
    last_login_at INTEGER,
    created_at    INTEGER NOT NULL
);

-- Signed-in browsers. The cookie holds a random token; only its SHA-256 is stored.
CREATE TABLE sessions (
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    csrf       TEXT    NOT NULL, -- the token every form of this session must carry
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Every sign-in attempt, refused or not: who tried, when, and why it was refused.
CREATE TABLE logins (
    id        INTEGER PRIMARY KEY,
    name      TEXT    NOT NULL,
    succeeded INTEGER NOT NULL, -- 0/1
    reason    TEXT,             -- 'password' | 'unknown' | 'locked'
    at        INTEGER NOT NULL
);

CREATE INDEX edits_record ON edits (record);
