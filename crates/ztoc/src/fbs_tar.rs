pub use root::*;

const _: () = ::planus::check_version_compatibility("planus-1.3.0");

/// The root namespace
///
/// Generated from these locations:
/// * File `fbs/zinfo.fbs`
#[no_implicit_prelude]
#[allow(clippy::needless_lifetimes)]
mod root {
    /// The namespace `zinfo`
    ///
    /// Generated from these locations:
    /// * File `fbs/zinfo.fbs`
    pub mod zinfo {
        /// The table `TarZinfo` in the namespace `zinfo`
        ///
        /// Generated from these locations:
        /// * Table `TarZinfo` in the file `fbs/zinfo.fbs:7`
        #[derive(
            Clone,
            Debug,
            PartialEq,
            PartialOrd,
            Eq,
            Ord,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
        )]
        pub struct TarZinfo {
            /// The field `version` in the table `TarZinfo`
            pub version: i32,
            /// The field `span_size` in the table `TarZinfo`
            pub span_size: i64,
            /// The field `size` in the table `TarZinfo`
            pub size: i64,
        }

        #[allow(clippy::derivable_impls)]
        impl ::core::default::Default for TarZinfo {
            fn default() -> Self {
                Self {
                    version: 0,
                    span_size: 0,
                    size: 0,
                }
            }
        }

        impl TarZinfo {
            /// Creates a [TarZinfoBuilder] for serializing an instance of this table.
            #[inline]
            pub fn builder() -> TarZinfoBuilder<()> {
                TarZinfoBuilder(())
            }

            #[allow(clippy::too_many_arguments)]
            pub fn create(
                builder: &mut ::planus::Builder,
                field_version: impl ::planus::WriteAsDefault<i32, i32>,
                field_span_size: impl ::planus::WriteAsDefault<i64, i64>,
                field_size: impl ::planus::WriteAsDefault<i64, i64>,
            ) -> ::planus::Offset<Self> {
                let prepared_version = field_version.prepare(builder, &0);
                let prepared_span_size = field_span_size.prepare(builder, &0);
                let prepared_size = field_size.prepare(builder, &0);

                let mut table_writer: ::planus::table_writer::TableWriter<10> =
                    ::core::default::Default::default();
                if prepared_span_size.is_some() {
                    table_writer.write_entry::<i64>(1);
                }
                if prepared_size.is_some() {
                    table_writer.write_entry::<i64>(2);
                }
                if prepared_version.is_some() {
                    table_writer.write_entry::<i32>(0);
                }

                unsafe {
                    table_writer.finish(builder, |object_writer| {
                        if let ::core::option::Option::Some(prepared_span_size) = prepared_span_size
                        {
                            object_writer.write::<_, _, 8>(&prepared_span_size);
                        }
                        if let ::core::option::Option::Some(prepared_size) = prepared_size {
                            object_writer.write::<_, _, 8>(&prepared_size);
                        }
                        if let ::core::option::Option::Some(prepared_version) = prepared_version {
                            object_writer.write::<_, _, 4>(&prepared_version);
                        }
                    });
                }
                builder.current_offset()
            }
        }

        impl ::planus::WriteAs<::planus::Offset<TarZinfo>> for TarZinfo {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<TarZinfo> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl ::planus::WriteAsOptional<::planus::Offset<TarZinfo>> for TarZinfo {
            type Prepared = ::planus::Offset<Self>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<TarZinfo>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl ::planus::WriteAsOffset<TarZinfo> for TarZinfo {
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<TarZinfo> {
                TarZinfo::create(builder, self.version, self.span_size, self.size)
            }
        }

        /// Builder for serializing an instance of the [TarZinfo] type.
        ///
        /// Can be created using the [TarZinfo::builder] method.
        #[derive(Debug)]
        #[must_use]
        pub struct TarZinfoBuilder<State>(State);

        impl TarZinfoBuilder<()> {
            /// Setter for the [`version` field](TarZinfo#structfield.version).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn version<T0>(self, value: T0) -> TarZinfoBuilder<(T0,)>
            where
                T0: ::planus::WriteAsDefault<i32, i32>,
            {
                TarZinfoBuilder((value,))
            }

            /// Sets the [`version` field](TarZinfo#structfield.version) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn version_as_default(self) -> TarZinfoBuilder<(::planus::DefaultValue,)> {
                self.version(::planus::DefaultValue)
            }
        }

        impl<T0> TarZinfoBuilder<(T0,)> {
            /// Setter for the [`span_size` field](TarZinfo#structfield.span_size).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn span_size<T1>(self, value: T1) -> TarZinfoBuilder<(T0, T1)>
            where
                T1: ::planus::WriteAsDefault<i64, i64>,
            {
                let (v0,) = self.0;
                TarZinfoBuilder((v0, value))
            }

            /// Sets the [`span_size` field](TarZinfo#structfield.span_size) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn span_size_as_default(self) -> TarZinfoBuilder<(T0, ::planus::DefaultValue)> {
                self.span_size(::planus::DefaultValue)
            }
        }

        impl<T0, T1> TarZinfoBuilder<(T0, T1)> {
            /// Setter for the [`size` field](TarZinfo#structfield.size).
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn size<T2>(self, value: T2) -> TarZinfoBuilder<(T0, T1, T2)>
            where
                T2: ::planus::WriteAsDefault<i64, i64>,
            {
                let (v0, v1) = self.0;
                TarZinfoBuilder((v0, v1, value))
            }

            /// Sets the [`size` field](TarZinfo#structfield.size) to the default value.
            #[inline]
            #[allow(clippy::type_complexity)]
            pub fn size_as_default(self) -> TarZinfoBuilder<(T0, T1, ::planus::DefaultValue)> {
                self.size(::planus::DefaultValue)
            }
        }

        impl<T0, T1, T2> TarZinfoBuilder<(T0, T1, T2)> {
            /// Finish writing the builder to get an [Offset](::planus::Offset) to a serialized [TarZinfo].
            #[inline]
            pub fn finish(self, builder: &mut ::planus::Builder) -> ::planus::Offset<TarZinfo>
            where
                Self: ::planus::WriteAsOffset<TarZinfo>,
            {
                ::planus::WriteAsOffset::prepare(&self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsDefault<i32, i32>,
                T1: ::planus::WriteAsDefault<i64, i64>,
                T2: ::planus::WriteAsDefault<i64, i64>,
            > ::planus::WriteAs<::planus::Offset<TarZinfo>> for TarZinfoBuilder<(T0, T1, T2)>
        {
            type Prepared = ::planus::Offset<TarZinfo>;

            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<TarZinfo> {
                ::planus::WriteAsOffset::prepare(self, builder)
            }
        }

        impl<
                T0: ::planus::WriteAsDefault<i32, i32>,
                T1: ::planus::WriteAsDefault<i64, i64>,
                T2: ::planus::WriteAsDefault<i64, i64>,
            > ::planus::WriteAsOptional<::planus::Offset<TarZinfo>>
            for TarZinfoBuilder<(T0, T1, T2)>
        {
            type Prepared = ::planus::Offset<TarZinfo>;

            #[inline]
            fn prepare(
                &self,
                builder: &mut ::planus::Builder,
            ) -> ::core::option::Option<::planus::Offset<TarZinfo>> {
                ::core::option::Option::Some(::planus::WriteAsOffset::prepare(self, builder))
            }
        }

        impl<
                T0: ::planus::WriteAsDefault<i32, i32>,
                T1: ::planus::WriteAsDefault<i64, i64>,
                T2: ::planus::WriteAsDefault<i64, i64>,
            > ::planus::WriteAsOffset<TarZinfo> for TarZinfoBuilder<(T0, T1, T2)>
        {
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> ::planus::Offset<TarZinfo> {
                let (v0, v1, v2) = &self.0;
                TarZinfo::create(builder, v0, v1, v2)
            }
        }

        /// Reference to a deserialized [TarZinfo].
        #[derive(Copy, Clone)]
        pub struct TarZinfoRef<'a>(#[allow(dead_code)] ::planus::table_reader::Table<'a>);

        impl<'a> TarZinfoRef<'a> {
            /// Getter for the [`version` field](TarZinfo#structfield.version).
            #[inline]
            pub fn version(&self) -> ::planus::Result<i32> {
                ::core::result::Result::Ok(self.0.access(0, "TarZinfo", "version")?.unwrap_or(0))
            }

            /// Getter for the [`span_size` field](TarZinfo#structfield.span_size).
            #[inline]
            pub fn span_size(&self) -> ::planus::Result<i64> {
                ::core::result::Result::Ok(self.0.access(1, "TarZinfo", "span_size")?.unwrap_or(0))
            }

            /// Getter for the [`size` field](TarZinfo#structfield.size).
            #[inline]
            pub fn size(&self) -> ::planus::Result<i64> {
                ::core::result::Result::Ok(self.0.access(2, "TarZinfo", "size")?.unwrap_or(0))
            }
        }

        impl<'a> ::core::fmt::Debug for TarZinfoRef<'a> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut f = f.debug_struct("TarZinfoRef");
                f.field("version", &self.version());
                f.field("span_size", &self.span_size());
                f.field("size", &self.size());
                f.finish()
            }
        }

        impl<'a> ::core::convert::TryFrom<TarZinfoRef<'a>> for TarZinfo {
            type Error = ::planus::Error;

            #[allow(unreachable_code)]
            fn try_from(value: TarZinfoRef<'a>) -> ::planus::Result<Self> {
                ::core::result::Result::Ok(Self {
                    version: ::core::convert::TryInto::try_into(value.version()?)?,
                    span_size: ::core::convert::TryInto::try_into(value.span_size()?)?,
                    size: ::core::convert::TryInto::try_into(value.size()?)?,
                })
            }
        }

        impl<'a> ::planus::TableRead<'a> for TarZinfoRef<'a> {
            #[inline]
            fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::core::result::Result<Self, ::planus::errors::ErrorKind> {
                ::core::result::Result::Ok(Self(::planus::table_reader::Table::from_buffer(
                    buffer, offset,
                )?))
            }
        }

        impl<'a> ::planus::VectorReadInner<'a> for TarZinfoRef<'a> {
            type Error = ::planus::Error;
            const STRIDE: usize = 4;

            unsafe fn from_buffer(
                buffer: ::planus::SliceWithStartOffset<'a>,
                offset: usize,
            ) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(buffer, offset).map_err(|error_kind| {
                    error_kind.with_error_location("[TarZinfoRef]", "get", buffer.offset_from_start)
                })
            }
        }

        /// # Safety
        /// The planus compiler generates implementations that initialize
        /// the bytes in `write_values`.
        unsafe impl ::planus::VectorWrite<::planus::Offset<TarZinfo>> for TarZinfo {
            type Value = ::planus::Offset<TarZinfo>;
            const STRIDE: usize = 4;
            #[inline]
            fn prepare(&self, builder: &mut ::planus::Builder) -> Self::Value {
                ::planus::WriteAs::prepare(self, builder)
            }

            #[inline]
            unsafe fn write_values(
                values: &[::planus::Offset<TarZinfo>],
                bytes: *mut ::core::mem::MaybeUninit<u8>,
                buffer_position: u32,
            ) {
                let bytes = bytes as *mut [::core::mem::MaybeUninit<u8>; 4];
                for (i, v) in ::core::iter::Iterator::enumerate(values.iter()) {
                    ::planus::WriteAsPrimitive::write(
                        v,
                        ::planus::Cursor::new(unsafe { &mut *bytes.add(i) }),
                        buffer_position - (Self::STRIDE * i) as u32,
                    );
                }
            }
        }

        impl<'a> ::planus::ReadAsRoot<'a> for TarZinfoRef<'a> {
            fn read_as_root(slice: &'a [u8]) -> ::planus::Result<Self> {
                ::planus::TableRead::from_buffer(
                    ::planus::SliceWithStartOffset {
                        buffer: slice,
                        offset_from_start: 0,
                    },
                    0,
                )
                .map_err(|error_kind| {
                    error_kind.with_error_location("[TarZinfoRef]", "read_as_root", 0)
                })
            }
        }
    }
}
