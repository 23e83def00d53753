-- A paused destination holds its deliveries: they are created and stay waiting, none attempted,
-- until it is resumed. A constant default: no table rewrite.
ALTER TABLE destinations ADD COLUMN paused boolean NOT NULL DEFAULT false;
