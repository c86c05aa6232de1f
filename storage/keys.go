package storage

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Object keys are built here and nowhere else, from server-generated IDs
// only. UUIDs in canonical form and decimal versions contain nothing that any
// driver escapes ("..", "/" runs, "__0x2f__", ".attrs", non-ASCII), so a key
// means the same object on every backend.
//
//	tenants/<tenant-id>/documents/<document-id>/v<version>

// TenantPrefix is the prefix of every object of a tenant, ending in "/".
// Tenant purge deletes everything under it.
func TenantPrefix(tenantID uuid.UUID) string {
	mustID("tenant", tenantID)
	return "tenants/" + tenantID.String() + "/"
}

// DocumentPrefix is the prefix of every version of a document, ending in "/".
func DocumentPrefix(tenantID, documentID uuid.UUID) string {
	mustID("document", documentID)
	return TenantPrefix(tenantID) + "documents/" + documentID.String() + "/"
}

// DocumentKey is the key of one version of a document. Versions start at 1.
//
// It panics on a zero UUID or a version below 1: both are programming errors
// that would make different documents share a key.
func DocumentKey(tenantID, documentID uuid.UUID, version int) string {
	if version < 1 {
		panic(fmt.Sprintf("storage: DocumentKey: version %d < 1", version))
	}
	return DocumentPrefix(tenantID, documentID) + "v" + strconv.Itoa(version)
}

// ParseDocumentKey reverses DocumentKey. The orphan collector uses it to map
// listed keys back to metadata rows; anything that DocumentKey would not have
// produced (temporary files, foreign objects) returns ErrInvalidKey.
func ParseDocumentKey(key string) (tenantID, documentID uuid.UUID, version int, err error) {
	bad := func() (uuid.UUID, uuid.UUID, int, error) {
		return uuid.Nil, uuid.Nil, 0, fmt.Errorf("parse document key %q: %w", key, ErrInvalidKey)
	}
	parts := strings.Split(key, "/")
	if len(parts) != 5 || parts[0] != "tenants" || parts[2] != "documents" || !strings.HasPrefix(parts[4], "v") {
		return bad()
	}
	if tenantID, err = uuid.Parse(parts[1]); err != nil || tenantID == uuid.Nil {
		return bad()
	}
	if documentID, err = uuid.Parse(parts[3]); err != nil || documentID == uuid.Nil {
		return bad()
	}
	if version, err = strconv.Atoi(parts[4][1:]); err != nil || version < 1 {
		return bad()
	}
	// Only the canonical spelling: uuid.Parse also accepts braces, urn: and
	// upper case, and Atoi accepts "+1" and "01".
	if DocumentKey(tenantID, documentID, version) != key {
		return bad()
	}
	return tenantID, documentID, version, nil
}

func mustID(what string, id uuid.UUID) {
	if id == uuid.Nil {
		panic("storage: zero " + what + " ID in object key")
	}
}
