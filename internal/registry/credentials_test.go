package registry

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func basic(u, p string) authn.Authenticator { return &authn.Basic{Username: u, Password: p} }

func TestAuthFromSecret(t *testing.T) {
	dcj := func(js string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(js)}}
	}
	b64 := base64.StdEncoding.EncodeToString([]byte("bob:pa:ss"))
	cases := []struct {
		name     string
		secret   *corev1.Secret
		host     string
		wantUser string
		wantPass string
		wantErr  string
	}{
		{"basic-auth", &corev1.Secret{Type: corev1.SecretTypeBasicAuth, Data: map[string][]byte{"username": []byte("u"), "password": []byte("p")}}, "r.test", "u", "p", ""},
		{"basic-auth without password", &corev1.Secret{Type: corev1.SecretTypeBasicAuth, Data: map[string][]byte{"username": []byte("u")}}, "r.test", "", "", "needs non-empty"},
		{"dockerconfig host key", dcj(`{"auths":{"r.test:5000":{"username":"a","password":"b"}}}`), "r.test:5000", "a", "b", ""},
		{"dockerconfig URL key", dcj(`{"auths":{"https://R.test/v1/":{"username":"a","password":"b"}}}`), "r.test", "a", "b", ""},
		{"dockerconfig Docker Hub alias", dcj(`{"auths":{"https://index.docker.io/v1/":{"username":"a","password":"b"}}}`), "registry-1.docker.io", "a", "b", ""},
		{"dockerconfig default port", dcj(`{"auths":{"r.test":{"username":"a","password":"b"}}}`), "r.test:443", "a", "b", ""},
		{"dockerconfig auth field", dcj(`{"auths":{"r.test":{"auth":"` + b64 + `"}}}`), "r.test", "bob", "pa:ss", ""},
		{"dockerconfig other host", dcj(`{"auths":{"other.test":{"username":"a","password":"b"}}}`), "r.test", "", "", `no auths entry for "r.test"`},
		{"dockerconfig bad auth", dcj(`{"auths":{"r.test":{"auth":"!!!"}}}`), "r.test", "", "", "not base64"},
		{"dockerconfig not JSON", dcj(`nope`), "r.test", "", "", "not a docker config"},
		{"opaque", &corev1.Secret{Type: corev1.SecretTypeOpaque}, "r.test", "", "", "has type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := AuthFromSecret(tc.secret, tc.host)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrCredentials) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want ErrCredentials containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := a.Authorization()
			if err != nil || cfg.Username != tc.wantUser || cfg.Password != tc.wantPass {
				t.Fatalf("credentials %q/%q (%v), want %q/%q", cfg.Username, cfg.Password, err, tc.wantUser, tc.wantPass)
			}
		})
	}
}
