package api

import (
	"time"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/rbac"
)

// DocumentDeps are the services of the documents (issue 5) routes.
type DocumentDeps struct {
	// Service stores documents; nil answers 503 on every document route.
	Service *core.DocumentService
	// SecretKey signs download URLs of buckets that cannot sign themselves
	// (file://, mem://), served at storage.BlobsPath. Empty: no such URLs.
	SecretKey []byte
	// URLExpiry is the default lifetime of a signed URL (default 15 min;
	// a client may ask for 1 min to 24 h with ?expires_in=seconds).
	URLExpiry time.Duration
	// TransferTimeout bounds one upload or download (default 1 h). While
	// bytes flow the connection stays open; a peer that stalls for the
	// server's read or write timeout is cut off.
	TransferTimeout time.Duration
}

// documentRoutes are the documents (issue 5) routes.
func (s *Server) documentRoutes() []Route {
	const t = tenantPath
	read, create := perm(rbac.ObjDocuments, rbac.ActRead), perm(rbac.ObjDocuments, rbac.ActCreate)
	update, del := perm(rbac.ObjDocuments, rbac.ActUpdate), perm(rbac.ObjDocuments, rbac.ActDelete)
	return []Route{
		{Method: "POST", Path: t + "/projects/:id/documents", Handler: s.createDocument, Perm: create},
		{Method: "GET", Path: t + "/projects/:id/documents", Handler: s.listDocuments, Perm: read},
		{Method: "GET", Path: t + "/documents/:doc", Handler: s.getDocument, Perm: read},
		{Method: "PATCH", Path: t + "/documents/:doc", Handler: s.patchDocument, Perm: update},
		{Method: "DELETE", Path: t + "/documents/:doc", Handler: s.deleteDocument, Perm: del},
		{Method: "POST", Path: t + "/documents/:doc/versions", Handler: s.addDocumentVersion, Perm: update},
		{Method: "GET", Path: t + "/documents/:doc/versions", Handler: s.listDocumentVersions, Perm: read},
		{Method: "GET", Path: t + "/documents/:doc/content", Handler: s.documentContent, Perm: read},
		{Method: "POST", Path: t + "/documents/:doc/versions/:n/restore", Handler: s.restoreDocumentVersion, Perm: update},
		{Method: "GET", Path: t + "/documents/:doc/url", Handler: s.documentURL, Perm: read},
	}
}
