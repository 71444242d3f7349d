package controller

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portcullis-dev/portcullis/internal/policy"
	"github.com/portcullis-dev/portcullis/internal/retention"
)

// TestWorkloadTemplatesInUse (envtest): the pod templates of a Deployment scaled to zero, a
// ReplicaSet kept for rollback, a StatefulSet, a DaemonSet, a Job and a CronJob protect their images
// though no Pod runs them; an image no object names is not protected.
func TestWorkloadTemplatesInUse(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	d := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	spec := func(image string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: image}}}}
	}
	always := func(image string) corev1.PodTemplateSpec {
		s := spec(image)
		s.Spec.RestartPolicy = corev1.RestartPolicyAlways
		return s
	}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}
	zero := int32(0)
	objs := []client.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "deploy", Namespace: ns},
			Spec: appsv1.DeploymentSpec{Replicas: &zero, Selector: sel, Template: always("registry.example.com/team/api:deploy")}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "rollback", Namespace: ns},
			Spec: appsv1.ReplicaSetSpec{Replicas: &zero, Selector: sel, Template: always("registry.example.com/team/api@" + d("a"))}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "sts", Namespace: ns},
			Spec: appsv1.StatefulSetSpec{Replicas: &zero, Selector: sel, Template: always("registry.example.com/team/api:sts")}},
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ds", Namespace: ns},
			Spec: appsv1.DaemonSetSpec{Selector: sel, Template: always("registry.example.com/team/api:ds")}},
		&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: ns},
			Spec: batchv1.JobSpec{Template: spec("registry.example.com/team/api:job")}},
		&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "cron", Namespace: ns},
			Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: spec("registry.example.com/team/api:nightly")}}}},
	}
	for _, o := range objs {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	p, err := retention.ListPodImages(ctx, k8sClient)
	if err != nil {
		t.Fatal(err)
	}
	listing := []policy.RetentionImage{
		{Digest: d("a"), Tags: []string{"old"}},
		{Digest: d("b"), Tags: []string{"deploy"}},
		{Digest: d("c"), Tags: []string{"sts"}},
		{Digest: d("e"), Tags: []string{"ds"}},
		{Digest: d("f"), Tags: []string{"job"}},
		{Digest: d("1"), Tags: []string{"nightly"}},
		{Digest: d("2"), Tags: []string{"unused"}},
	}
	got := p.InUse("team/api", listing)
	for _, img := range listing[:6] {
		if !got[img.Digest] {
			t.Errorf("%v must be in use (a workload's pod template names it): %v", img.Tags, got)
		}
	}
	if got[d("2")] {
		t.Error("no workload names team/api:unused")
	}
}
