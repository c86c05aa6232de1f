-- Reserved; replaced by the area that owns this migration.
SELECT 1;
