/**
 * Migration 1: the `videos` mirror of meta.json. Columns hold ids, states and
 * numbers only; `title` and `description` stay NULL unless METADATA_MIRROR_PHI=true.
 * The listing reads newest first with keyset pagination on (uploaded_at, id), so
 * each filter it offers has an index in that order.
 */
export const version = 1;
export const name = 'videos';
export const sql = `
CREATE TABLE videos (
  id            uuid PRIMARY KEY,
  owner         text,
  status        text NOT NULL,
  progress      smallint,
  uploaded_at   timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL,
  duration      double precision,
  width         integer,
  height        integer,
  renditions    text[] NOT NULL DEFAULT '{}',
  checksum      text NOT NULL,
  size          bigint NOT NULL,
  meta_checksum text NOT NULL,
  title         text,
  description   text,
  mirrored_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX videos_by_upload ON videos (uploaded_at DESC, id DESC);
CREATE INDEX videos_by_owner ON videos (owner, uploaded_at DESC, id DESC);
CREATE INDEX videos_by_status ON videos (status, uploaded_at DESC, id DESC);
`;
