//! `#[multiproc::managed]`: makes a type shareable through a
//! `multiproc::manager::Manager`, with a generated proxy.
//!
//! Use it through `multiproc` (`#[multiproc::managed]`), which re-exports it.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{
    parse_macro_input, spanned::Spanned, FnArg, GenericArgument, ImplItem, ImplItemFn, ItemImpl,
    Pat, PathArguments, ReturnType, Type, Visibility,
};

/// Put on an inherent `impl` block of a type `T` that is
/// `Serialize + DeserializeOwned + Send + 'static`.
///
/// Generates:
///
/// - `impl multiproc::manager::Managed for T` (the server-side dispatch);
/// - `pub struct TProxy`, a proxy with one method per `pub fn` of the block
///   that takes `&self` or `&mut self`, with the same name and arguments:
///   a method returning `R` becomes `fn(&self, ..) -> multiproc::Result<R>`,
///   one returning `Result<R, E>` becomes
///   `fn(&self, ..) -> Result<R, multiproc::manager::CallError<E>>`.
///
/// Arguments and results must be `Serialize + DeserializeOwned` (`&str`
/// and `&[U]` arguments travel as `String` and `Vec<U>`). Other items of
/// the block (private methods, associated functions) are not exposed.
#[proc_macro_attribute]
pub fn managed(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(Span::call_site(), "#[managed] takes no arguments")
            .to_compile_error()
            .into();
    }
    let imp = parse_macro_input!(item as ItemImpl);
    match expand(&imp) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Method {
    name: syn::Ident,
    /// (argument name, type as written, owned type decoded in the server, is a reference)
    args: Vec<(syn::Ident, Type, Type, bool)>,
    ret: Ret,
    docs: Vec<syn::Attribute>,
}

enum Ret {
    Unit,
    Plain(Box<Type>),
    Result(Box<Type>, Box<Type>),
}

fn result_parts(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(a) = &last.arguments else {
        return None;
    };
    let mut tys = a.args.iter().filter_map(|g| match g {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let ok = tys.next()?;
    let err = tys.next()?;
    Some((ok, err))
}

fn method(f: &ImplItemFn) -> syn::Result<Option<Method>> {
    if !matches!(f.vis, Visibility::Public(_)) {
        return Ok(None);
    }
    let Some(FnArg::Receiver(recv)) = f.sig.inputs.first() else {
        return Ok(None);
    };
    if recv.reference.is_none() {
        return Err(syn::Error::new(
            recv.span(),
            "#[managed] methods take &self or &mut self (the object stays in the server)",
        ));
    }
    if !f.sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            f.sig.generics.span(),
            "#[managed] methods cannot be generic",
        ));
    }
    if f.sig.asyncness.is_some() {
        return Err(syn::Error::new(
            f.sig.span(),
            "#[managed] methods cannot be async",
        ));
    }
    let mut args = Vec::new();
    for (i, a) in f.sig.inputs.iter().skip(1).enumerate() {
        let FnArg::Typed(pt) = a else { continue };
        let name = match &*pt.pat {
            Pat::Ident(id) => id.ident.clone(),
            _ => format_ident!("arg{}", i),
        };
        let ty = (*pt.ty).clone();
        let (owned, is_ref) = match &ty {
            Type::Reference(r) => {
                if r.mutability.is_some() {
                    return Err(syn::Error::new(
                        r.span(),
                        "#[managed] methods cannot take &mut arguments (they are copied to the server)",
                    ));
                }
                let inner = &r.elem;
                (
                    syn::parse_quote!(<#inner as ::std::borrow::ToOwned>::Owned),
                    true,
                )
            }
            _ => (ty.clone(), false),
        };
        args.push((name, ty, owned, is_ref));
    }
    let ret = match &f.sig.output {
        ReturnType::Default => Ret::Unit,
        ReturnType::Type(_, t) => match result_parts(t) {
            Some((ok, err)) => Ret::Result(Box::new(ok), Box::new(err)),
            None => Ret::Plain(t.clone()),
        },
    };
    let docs = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    Ok(Some(Method {
        name: f.sig.ident.clone(),
        args,
        ret,
        docs,
    }))
}

fn expand(imp: &ItemImpl) -> syn::Result<TokenStream2> {
    if let Some((_, path, _)) = &imp.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[managed] goes on an inherent impl block, not a trait impl",
        ));
    }
    if !imp.generics.params.is_empty() {
        return Err(syn::Error::new(
            imp.generics.span(),
            "#[managed] does not support generic types",
        ));
    }
    let self_ty = &imp.self_ty;
    let Type::Path(tp) = &**self_ty else {
        return Err(syn::Error::new(
            self_ty.span(),
            "#[managed] needs a named type",
        ));
    };
    let ident = &tp
        .path
        .segments
        .last()
        .ok_or_else(|| syn::Error::new(self_ty.span(), "#[managed] needs a named type"))?
        .ident;
    let typeid = ident.to_string();
    let proxy = format_ident!("{}Proxy", ident);

    let mut methods = Vec::new();
    for item in &imp.items {
        if let ImplItem::Fn(f) = item {
            if let Some(m) = method(f)? {
                methods.push(m);
            }
        }
    }

    let mp = quote!(::multiproc::manager);
    let arms = methods.iter().map(|m| {
        let name = &m.name;
        let name_str = name.to_string();
        let names: Vec<_> = m.args.iter().map(|a| &a.0).collect();
        let owned: Vec<_> = m.args.iter().map(|a| &a.2).collect();
        let pass = m.args.iter().map(|(n, _, _, is_ref)| {
            if *is_ref {
                quote!(::std::borrow::Borrow::borrow(&#n))
            } else {
                quote!(#n)
            }
        });
        let call = quote!(self.#name(#(#pass),*));
        let ret = match &m.ret {
            Ret::Result(..) => quote!(#mp::__private::ret_result(&#call)),
            _ => quote!(#mp::__private::ret(&#call)),
        };
        quote! {
            #name_str => {
                #[allow(unused_parens)]
                let (#(#names,)*): (#(#owned,)*) = #mp::__private::args(method, args)?;
                #ret
            }
        }
    });

    let proxy_methods = methods.iter().map(|m| {
        let name = &m.name;
        let name_str = name.to_string();
        let docs = &m.docs;
        let params = m.args.iter().map(|(n, t, _, _)| quote!(#n: #t));
        let names: Vec<_> = m.args.iter().map(|a| &a.0).collect();
        let (out, body) = match &m.ret {
            Ret::Unit => (
                quote!(::multiproc::Result<()>),
                quote!(self.core.call_plain::<_, ()>(#name_str, &(#(#names,)*))),
            ),
            Ret::Plain(t) => (
                quote!(::multiproc::Result<#t>),
                quote!(self.core.call_plain::<_, #t>(#name_str, &(#(#names,)*))),
            ),
            Ret::Result(ok, err) => (
                quote!(::std::result::Result<#ok, #mp::CallError<#err>>),
                quote!(self.core.call_method::<_, #ok, #err>(#name_str, &(#(#names,)*))),
            ),
        };
        quote! {
            #(#docs)*
            pub fn #name(&self, #(#params),*) -> #out {
                #body
            }
        }
    });

    let proxy_doc = format!(
        "A proxy to a [`{typeid}`] living in a manager's server (generated by `#[multiproc::managed]`): \
         each method runs there. `Clone` opens a new connection; the proxy is `Send`, not `Sync`."
    );

    Ok(quote! {
        #imp

        impl #mp::Managed for #self_ty {
            const TYPEID: &'static str = #typeid;
            type Proxy = #proxy;

            fn __dispatch(
                &mut self,
                method: &str,
                args: &[u8],
            ) -> ::std::result::Result<#mp::__private::Returned, #mp::__private::DispatchError> {
                match method {
                    #(#arms)*
                    _ => ::std::result::Result::Err(#mp::__private::unknown(#typeid, method)),
                }
            }
        }

        #[doc = #proxy_doc]
        #[derive(Debug, Clone)]
        pub struct #proxy {
            core: #mp::ProxyCore,
        }

        impl #mp::Proxy for #proxy {
            const TYPEID: &'static str = #typeid;
            fn from_core(core: #mp::ProxyCore) -> Self {
                Self { core }
            }
            fn core(&self) -> &#mp::ProxyCore {
                &self.core
            }
        }

        impl #proxy {
            /// A new handle with its own connection, or the error if the
            /// server cannot be reached.
            pub fn try_clone(&self) -> ::multiproc::Result<Self> {
                ::std::result::Result::Ok(Self { core: self.core.try_clone()? })
            }

            #(#proxy_methods)*
        }

        impl #mp::__private::serde::Serialize for #proxy {
            fn serialize<S: #mp::__private::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                #mp::__private::serde::Serialize::serialize(&self.core, s)
            }
        }

        impl<'de> #mp::__private::serde::Deserialize<'de> for #proxy {
            fn deserialize<D: #mp::__private::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                let core = <#mp::ProxyCore as #mp::__private::serde::Deserialize>::deserialize(d)?;
                if core.typeid() != #typeid {
                    return ::std::result::Result::Err(<D::Error as #mp::__private::serde::de::Error>::custom(
                        ::std::format!("expected a proxy to a {}, got one to a {}", #typeid, core.typeid()),
                    ));
                }
                ::std::result::Result::Ok(Self { core })
            }
        }
    })
}
