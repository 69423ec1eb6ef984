// Package crdschema defaults and validates custom resources against a CRD file the way
// kube-apiserver does (pruning, defaults, OpenAPI schema, list-map keys, CEL rules), using the API
// server's own apiextensions code, without a server. Fuzz and golden tests use it to hold fleets to
// exactly the rules admission applies; envtest tests check it agrees with a real server.
package crdschema

import (
	"context"
	"fmt"
	"os"
	"reflect"

	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// Validator holds one version of a CRD's schema.
type Validator struct {
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaValidator
	cel        *cel.Validator
	namespaced bool
}

// Load reads the CRD at path and prepares the schema of version.
func Load(path, version string) (*Validator, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &crd); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != version {
			continue
		}
		if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			return nil, fmt.Errorf("%s: version %s has no schema", path, version)
		}
		internal := &apiextensions.JSONSchemaProps{}
		if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, internal, nil); err != nil {
			return nil, fmt.Errorf("%s: converting the schema: %w", path, err)
		}
		s, err := structuralschema.NewStructural(internal)
		if err != nil {
			return nil, fmt.Errorf("%s: the schema is not structural: %w", path, err)
		}
		sv, _, err := apiservervalidation.NewSchemaValidator(internal)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &Validator{
			structural: s, schema: sv, cel: cel.NewValidator(s, true, celconfig.PerCallLimit),
			namespaced: crd.Spec.Scope == apiextensionsv1.NamespaceScoped,
		}, nil
	}
	return nil, fmt.Errorf("%s: no version %s", path, version)
}

// DefaultAndValidate decodes obj as the API server decodes a request body (metadata that does not
// decode refused, unknown fields pruned, nulls the schema neither allows nor defaults removed) and
// applies the schema's defaults, in place, then returns what the API server would refuse it for on
// create: its metadata, its schema and list keys, then its CEL rules. A namespaced object without a
// namespace is checked as if created in "default", as kubectl sends it.
func (v *Validator) DefaultAndValidate(obj map[string]any) field.ErrorList {
	meta, hasMeta, err := objectmeta.GetObjectMeta(obj, false)
	if err != nil {
		// The API server refuses the request body outright (400, not 422).
		return field.ErrorList{field.Invalid(field.NewPath("metadata"), obj["metadata"], err.Error())}
	}
	pruning.Prune(obj, v.structural, true)
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(obj, v.structural)
	if err := objectmeta.Coerce(nil, obj, v.structural, false, true); err != nil {
		return field.ErrorList{err}
	}
	if !hasMeta {
		meta = &metav1.ObjectMeta{}
	}
	if err := objectmeta.SetObjectMeta(obj, meta); err != nil {
		return field.ErrorList{field.InternalError(field.NewPath("metadata"), err)}
	}
	structuraldefaulting.Default(obj, v.structural)

	requested := meta.DeepCopy()
	if v.namespaced && requested.Namespace == "" {
		requested.Namespace = metav1.NamespaceDefault
	}
	errs := apimachineryvalidation.ValidateObjectMetaAccessor(requested, v.namespaced, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, v.schema)...)
	errs = append(errs, objectmeta.Validate(nil, obj, v.structural, false)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, v.structural, obj)...)
	if blocking(errs) {
		// As the API server: CEL rules cannot be run on an object of the wrong shape.
		return append(errs, field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"))
	}
	celErrs, _ := v.cel.Validate(context.Background(), nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

// blocking says whether errs keep the API server from running the CEL rules (its registry's
// hasBlockingErr): a missing, mistyped or oversized value, not one that only fails a pattern or a
// bound.
func blocking(errs field.ErrorList) bool {
	for _, err := range errs {
		switch err.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return true
		}
	}
	return false
}

// Object defaults and validates a typed object: on success it is replaced by its defaulted form.
func (v *Validator) Object(obj runtime.Object) field.ErrorList {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return field.ErrorList{field.InternalError(nil, err)}
	}
	if errs := v.DefaultAndValidate(u); len(errs) > 0 {
		return errs
	}
	// Decode into a zeroed object: what pruning removed must not survive from the original.
	rv := reflect.ValueOf(obj).Elem()
	rv.Set(reflect.Zero(rv.Type()))
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u, obj); err != nil {
		return field.ErrorList{field.InternalError(nil, err)}
	}
	return nil
}
